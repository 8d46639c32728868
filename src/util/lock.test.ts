import { mkdir, mkdtemp, readFile, readdir, rm, utimes, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { acquireLock } from './lock.js';

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-lock-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const dead = (token: string) => JSON.stringify({ pid: 999999999, host: hostname(), token });
const old = new Date(Date.now() - 60_000);

describe('acquireLock', () => {
  it('fails at once with timeoutMs 0 while a live owner holds it, naming the owner', async () => {
    const a = await acquireLock(join(tmp, 'l'), { timeoutMs: 0 });
    await expect(acquireLock(join(tmp, 'l'), { timeoutMs: 0 })).rejects.toMatchObject({
      code: 'LOCK_TIMEOUT',
      message: expect.stringContaining(`pid ${process.pid}`),
    });
    await a.release();
    const b = await acquireLock(join(tmp, 'l'), { timeoutMs: 0 });
    await b.release();
    expect(await readdir(tmp)).toEqual([]);
  });

  it('takes over a lock of unreadable content (an older packfarm’s lock dir) once it is 10 s old', async () => {
    const lock = join(tmp, 'l');
    await mkdir(lock);
    await writeFile(join(lock, 'pid'), '999999999');
    await expect(acquireLock(lock, { timeoutMs: 0 })).rejects.toMatchObject({ code: 'LOCK_TIMEOUT' });
    await utimes(lock, old, old);
    const held = await acquireLock(lock, { timeoutMs: 0 });
    expect(JSON.parse(await readFile(lock, 'utf8')).token).toBe(held.owner.token);
    await held.release();
  });

  it('is not stuck behind the break file of a breaker that died mid-takeover', async () => {
    const lock = join(tmp, 'l');
    await writeFile(lock, dead('d1'));
    await writeFile(`${lock}.break-d1`, dead('breaker'));
    const held = await acquireLock(lock, { timeoutMs: 2_000 });
    await held.release();
    expect(await readdir(tmp)).toEqual([]);
  });

  it('release leaves alone a lock that is no longer its own', async () => {
    const lock = join(tmp, 'l');
    const held = await acquireLock(lock, { timeoutMs: 0 });
    await writeFile(lock, JSON.stringify({ pid: process.pid, host: hostname(), token: 'other' }));
    await held.release();
    expect(JSON.parse(await readFile(lock, 'utf8')).token).toBe('other');
  });
});
