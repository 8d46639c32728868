import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildDirKey, openBuildDirs } from './workdir.js';

let data: string;
beforeAll(async () => {
  data = await mkdtemp(join(tmpdir(), 'pf-workdir-'));
});
afterAll(async () => {
  await rm(data, { recursive: true, force: true });
});

describe('openBuildDirs', () => {
  it('keeps the workspace between builds of one image and platform, and empties the rest', async () => {
    const key = buildDirKey('oci:/x:app', 'linux/amd64');
    expect(key).not.toBe(buildDirKey('oci:/x:app', 'linux/arm64'));
    const a = await openBuildDirs({ key, dataDir: data });
    expect(a.persistent).toBe(true);
    await writeFile(join(a.app, 'kept'), '1');
    await writeFile(join(a.layers, 'gone'), '1');
    await a.release();
    const b = await openBuildDirs({ key, dataDir: data });
    expect(b.app).toBe(a.app);
    expect(await readdir(b.app)).toEqual(['kept']);
    expect(await readdir(b.layers)).toEqual([]);
    await b.release();
  });

  it('lets one build at a time hold the dirs; a dead owner’s lock is taken over', async () => {
    const key = buildDirKey('oci:/y:app', 'linux/amd64');
    const a = await openBuildDirs({ key, dataDir: data });
    await expect(openBuildDirs({ key, dataDir: data })).rejects.toThrow(/another build \(pid \d+\) is using/);
    await a.release();
    // A lock left by a process that no longer exists.
    const lock = join(data, 'builds', `${key}.lock`);
    await mkdir(lock);
    await writeFile(join(lock, 'pid'), '999999999');
    const b = await openBuildDirs({ key, dataDir: data });
    await b.release();
  });

  it('uses a fresh temp dir with keepTemp, and leaves it', async () => {
    const d = await openBuildDirs({ key: 'k', dataDir: data, tmpDir: data, keepTemp: true });
    expect(d.persistent).toBe(false);
    await d.release();
    expect((await readdir(d.root)).sort()).toEqual(['layers', 'platform', 'scratch', 'workspace']);
  });
});
