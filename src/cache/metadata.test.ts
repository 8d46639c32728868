import { mkdtemp, readdir, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { parsePlatform } from '../oci/platform.js';
import { createLogger } from '../util/log.js';
import { dirCachePaths, openDirCache } from './dir-cache.js';
import { CACHE_METADATA_LABEL, cachePlatformKey, cachedLayersFor, parseCacheMetadata } from './metadata.js';

describe('cachePlatformKey', () => {
  it('normalises aliases so equivalent platforms share a cache', () => {
    expect(cachePlatformKey(parsePlatform('linux/amd64'))).toBe('linux-amd64');
    expect(cachePlatformKey(parsePlatform('linux/x86_64'))).toBe('linux-amd64');
    expect(cachePlatformKey(parsePlatform('linux/arm64/v8'))).toBe('linux-arm64');
    expect(cachePlatformKey(parsePlatform('linux/arm'))).toBe('linux-arm-v7');
    expect(cachePlatformKey(parsePlatform('linux/arm64'))).not.toBe(
      cachePlatformKey(parsePlatform('linux/amd64')),
    );
  });
});

describe('parseCacheMetadata', () => {
  it('reads the lifecycle shape and keeps unknown fields', () => {
    const meta = parseCacheMetadata(
      JSON.stringify({
        extra: 1,
        buildpacks: [
          { key: 'a/b', version: '1', layers: { l: { sha: 'sha256:x', cache: true, data: { k: 'v' } } } },
        ],
      }),
      'test',
    );
    expect(cachedLayersFor(meta, 'a/b').l).toEqual({
      sha: 'sha256:x',
      cache: true,
      build: false,
      launch: false,
      data: { k: 'v' },
    });
    expect(cachedLayersFor(meta, 'other')).toEqual({});
    expect((meta as Record<string, unknown>).extra).toBe(1);
  });

  it('names the source and field on bad input', () => {
    expect(() => parseCacheMetadata('{"buildpacks": {}}', '/c/meta')).toThrow(/\/c\/meta.*buildpacks/);
    expect(() => parseCacheMetadata('{', '/c/meta')).toThrow(/\/c\/meta: not valid JSON/);
  });
});

describe('dir cache', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  it('treats damaged metadata as an empty cache with a warning', async () => {
    dir = await mkdtemp(join(tmpdir(), 'packfarm-cache-unit-'));
    const amd = parsePlatform('linux/amd64');
    const { committed } = dirCachePaths(dir, amd);
    await mkdir(committed, { recursive: true });
    await writeFile(join(committed, CACHE_METADATA_LABEL), '{"buildpacks": 3}');
    const out: string[] = [];
    const cache = openDirCache(dir, amd, createLogger({ write: (l) => out.push(l) }));
    expect(await cache.metadata()).toEqual({ buildpacks: [] });
    expect(out.join('\n')).toMatch(/WARN: ignoring the cache at .*linux-amd64/);
  });

  it('aborting an export leaves the committed cache alone and no staging dir', async () => {
    dir = await mkdtemp(join(tmpdir(), 'packfarm-cache-unit-'));
    const amd = parsePlatform('linux/amd64');
    const cache = openDirCache(dir, amd, createLogger({ write: () => {} }));
    const w1 = await cache.startWrite();
    await w1.commit({ buildpacks: [] });
    const w2 = await cache.startWrite();
    await writeFile(join(w2.tempDir, 'junk'), 'x');
    await w2.abort();
    expect(await readdir(join(dir, 'linux-amd64'))).toEqual(['committed']);
    expect(await readdir(dirCachePaths(dir, amd).committed)).toEqual([CACHE_METADATA_LABEL]);
  });
});
