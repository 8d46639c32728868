import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import type { TargetPlan } from '../api/plan.js';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { isPackfarmError } from '../util/errors.js';
import { startCacheReturn } from './local-inputs.js';

/**
 * --cache-dir on a farm, the coordinator's end: what a node sends back is committed into the cache dir as a
 * local export commits (reused layers kept, new ones moved in, one swap), or not at all.
 */
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-cache-return-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const target = { name: 'linux/amd64', platform: { os: 'linux', architecture: 'amd64' } } as TargetPlan;
const platformDir = () => join(dir, 'linux-amd64');
const committed = () => join(platformDir(), 'committed');
const META = 'io.buildpacks.lifecycle.cache.metadata';

async function seed(): Promise<{ digest: Digest; size: number }> {
  const bytes = Buffer.from('old layer tar');
  const digest = sha256Digest(bytes);
  await mkdir(committed(), { recursive: true });
  await writeFile(join(committed(), `${digest}.tar`), bytes);
  await writeFile(join(committed(), META), '{"buildpacks":[]}');
  return { digest, size: bytes.length };
}

async function send(back: Awaited<ReturnType<typeof startCacheReturn>>, bytes: Buffer) {
  const digest = sha256Digest(bytes);
  expect(await back.has(digest)).toBe(false);
  const r = back.receive(digest);
  r.write(bytes);
  await r.end();
  return { digest, size: bytes.length };
}

describe('startCacheReturn', () => {
  it('commits the sent layers beside the reused ones, with the new metadata, and leaves no staging dir', async () => {
    const old = await seed();
    const back = await startCacheReturn(dir, target);
    expect(await back.has(old.digest)).toBe(true);
    const fresh = await send(back, Buffer.from('new layer tar'));
    const metadata = JSON.stringify({ buildpacks: [{ key: 'x', version: '1', layers: {} }] });
    await back.commit({ metadata, layers: [old, fresh] });
    expect((await readdir(committed())).sort()).toEqual(
      [`${fresh.digest}.tar`, `${old.digest}.tar`, META].sort(),
    );
    expect(JSON.parse(await readFile(join(committed(), META), 'utf8'))).toEqual(JSON.parse(metadata));
    expect(await readdir(platformDir())).toEqual(['committed']);
  });

  it('a layer neither sent nor cached: BLOB_MISSING, the cache stays as it was', async () => {
    const old = await seed();
    const back = await startCacheReturn(dir, target);
    let err: unknown;
    try {
      await back.commit({ metadata: '{}', layers: [old, { digest: sha256Digest('never sent'), size: 10 }] });
    } catch (e) {
      err = e;
    }
    expect(isPackfarmError(err, 'BLOB_MISSING')).toBe(true);
    expect((await readdir(committed())).sort()).toEqual([`${old.digest}.tar`, META].sort());
    expect(await readdir(platformDir())).toEqual(['committed']);
  });

  it('abort (the target failed) drops what arrived and leaves the cache alone', async () => {
    await seed();
    const back = await startCacheReturn(dir, target);
    await send(back, Buffer.from('half a build'));
    await back.abort();
    expect(await readdir(platformDir())).toEqual(['committed']);
    expect(await readdir(committed())).toHaveLength(2);
  });
});
