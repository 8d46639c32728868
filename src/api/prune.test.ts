import { mkdir, mkdtemp, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { parseAge, prune } from './prune.js';

let dir: string;
const HOUR = 3600_000;
const now = Date.now();

async function entry(sub: string, name: string, bytes: number, ageMs: number): Promise<string> {
  const p = join(dir, sub, name);
  await mkdir(join(p, 'inner'), { recursive: true });
  await writeFile(join(p, 'inner', 'data'), Buffer.alloc(bytes, 1));
  const t = new Date(now - ageMs);
  for (const q of [join(p, 'inner', 'data'), join(p, 'inner'), p]) await utimes(q, t, t);
  return p;
}

async function lock(sub: string, name: string, pid: number): Promise<void> {
  await mkdir(join(dir, sub, `${name}.lock`), { recursive: true });
  await writeFile(join(dir, sub, `${name}.lock`, 'pid'), String(pid));
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-prune-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('prune', () => {
  it('keeps what a running build uses (its build dir, and every cache and rootfs meanwhile), removes the rest', async () => {
    const oldBuild = await entry('builds', 'a', 100_000, 48 * HOUR);
    const running = await entry('builds', 'b', 10, 0);
    await lock('builds', 'b', process.pid);
    const cache = await entry('cache', 'c', 50_000, 48 * HOUR);
    const rootfs = await entry('rootfs', 'r', 20_000, 48 * HOUR);
    await mkdir(join(dir, 'images', 'x'), { recursive: true });

    const r = await prune({ dataDir: dir, now });
    expect(r.removed.map((e) => [e.kind, e.path])).toEqual([['build', oldBuild]]);
    expect(r.inUse.sort()).toEqual([running, cache, rootfs].sort());
    expect(r.freedBytes).toBeGreaterThanOrEqual(100_000);
    expect((await readdir(join(dir, 'builds'))).sort()).toEqual(['b', 'b.lock']);
    expect(await readdir(join(dir, 'images'))).toEqual(['x']);
  });

  it("with an age removes only entries unused for longer; a dead owner's lock goes with its entry", async () => {
    await entry('cache', 'old', 1000, 10 * 24 * HOUR);
    const fresh = await entry('cache', 'new', 1000, 1 * HOUR);
    await entry('builds', 'dead', 1000, 10 * 24 * HOUR);
    await lock('builds', 'dead', 2 ** 22 + 12345); // above pid_max: no such process
    const dry = await prune({ dataDir: dir, now, olderThanMs: parseAge('7d'), dryRun: true });
    expect(dry.removed.map((e) => e.path.split('/').slice(-2).join('/')).sort()).toEqual([
      'builds/dead',
      'cache/old',
    ]);
    expect((await readdir(join(dir, 'cache'))).sort()).toEqual(['new', 'old']);
    const r = await prune({ dataDir: dir, now, olderThanMs: parseAge('7d') });
    expect(r.freedBytes).toBe(dry.freedBytes);
    expect(await readdir(join(dir, 'cache'))).toEqual(['new']);
    expect(await readdir(join(dir, 'builds'))).toEqual([]);
    expect(fresh).toContain('new');
  });

  it('reads file locks (withFileLock) too, and keeps an unpack in progress with its entry', async () => {
    const digestDir = await entry('rootfs', 'sha256-aa', 1000, 48 * HOUR);
    const tmp = await entry('rootfs', 'sha256-aa.tmp-1-abc', 1000, 48 * HOUR);
    await writeFile(
      join(dir, 'rootfs', 'sha256-aa.lock'),
      JSON.stringify({ pid: process.pid, host: hostname(), token: 'x' }),
    );
    const dead = await entry('rootfs', 'sha256-bb', 1000, 48 * HOUR);
    await writeFile(
      join(dir, 'rootfs', 'sha256-bb.lock'),
      JSON.stringify({ pid: 2 ** 22 + 7, host: hostname(), token: 'y' }),
    );
    const r = await prune({ dataDir: dir, now });
    expect(r.inUse.sort()).toEqual([digestDir, tmp].sort());
    expect(r.removed.map((e) => e.path)).toEqual([dead]);
    expect((await readdir(join(dir, 'rootfs'))).sort()).toEqual([
      'sha256-aa',
      'sha256-aa.lock',
      'sha256-aa.tmp-1-abc',
    ]);
  });

  it('a lock naming no possible process (pid -1, a corrupt file) does not keep its entry forever', async () => {
    // kill(-1, 0) signals every process there is: a copy of "is it alive" without processAlive's pid check
    // took such a lock as held for ever.
    const stuck = await entry('builds', 'stuck', 1000, 48 * HOUR);
    await lock('builds', 'stuck', -1);
    const r = await prune({ dataDir: dir, now });
    expect(r.removed.map((e) => e.path)).toEqual([stuck]);
    expect(await readdir(join(dir, 'builds'))).toEqual([]);
  });

  it('parses ages and names the flag on a bad one', () => {
    expect(parseAge('90')).toBe(90_000);
    expect(parseAge('30m')).toBe(30 * 60_000);
    expect(parseAge('2w')).toBe(14 * 24 * HOUR);
    expect(() => parseAge('soon')).toThrow(/--older-than "soon": not an age/);
  });
});
