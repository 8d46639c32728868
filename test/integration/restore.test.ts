import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dirCachePaths } from '../../src/cache/dir-cache.js';
import { type CacheLocation, openCache } from '../../src/cache/open.js';
import { exportCache } from '../../src/phase/cache.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { LifecycleMetadataSchema } from '../../src/platform/labels.js';
import { restore } from '../../src/phase/restore.js';
import { createLogger } from '../../src/util/log.js';
import { parseToml } from '../../src/util/toml.js';
import { requireRoot } from '../helpers/root.js';

/**
 * The restore table of buildpack.md "Layer Types" against a real dir cache: launch-only layers come back as
 * metadata, cached layers as metadata + contents when the previous image and the cache agree.
 */
const AMD64 = parsePlatform('linux/amd64');
const GROUP = [
  { id: 'example/node', version: '1.0.0', api: '0.10' },
  { id: 'example/npm', version: '2.0.0', api: '0.10' },
];
const FAKE_SHA = `sha256:${'1'.repeat(64)}`;

let root: string;
let n = 0;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-restore-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function layer(layers: string, bp: string, name: string, types: string, content = name) {
  await mkdir(join(layers, bp, name), { recursive: true });
  await writeFile(join(layers, bp, name, 'file'), `${content}\n`);
  await writeFile(join(layers, bp, `${name}.toml`), `[types]\n${types}\n\n[metadata]\nname = "${name}"\n`);
}

/** A dir cache holding launch+cache layers `lc` and `lc-new` (the latter not in the previous image). */
async function cacheWithLaunchLayers(): Promise<{ location: CacheLocation; sha: Record<string, string> }> {
  const layers = join(root, `built-${++n}`);
  await layer(layers, 'example_node', 'lc', 'launch = true\ncache = true');
  await layer(layers, 'example_node', 'lc-changed', 'launch = true\ncache = true');
  await layer(layers, 'example_node', 'lc-new', 'launch = true\ncache = true');
  const location: CacheLocation = { kind: 'dir', dir: join(root, `cache-${n}`) };
  const res = await exportCache({ location, layersDir: layers, group: GROUP, target: AMD64 });
  return { location, sha: Object.fromEntries(res.layers.map((l) => [l.layer, l.diffId])) };
}

function previousMetadata(sha: Record<string, string>) {
  return LifecycleMetadataSchema.parse({
    buildpacks: [
      {
        key: 'example/node',
        version: '1.0.0',
        layers: {
          runtime: { sha: FAKE_SHA, launch: true, data: { version: '20.1' } },
          'build-and-launch': { sha: FAKE_SHA, launch: true, build: true, data: {} },
          lc: { sha: sha.lc, launch: true, cache: true, data: { name: 'lc' } },
          'lc-changed': { sha: FAKE_SHA, launch: true, cache: true, data: { name: 'old' } },
        },
        store: { metadata: { counter: 3 } },
      },
      {
        key: 'example/gone',
        version: '1.0.0',
        layers: { old: { sha: FAKE_SHA, launch: true, data: {} } },
        store: { metadata: { x: 1 } },
      },
    ],
  });
}

async function run(platformApi: string, opts: { skipLayers?: boolean; uid?: number; gid?: number } = {}) {
  const { location, sha } = await cacheWithLaunchLayers();
  const layers = join(root, `restored-${++n}`);
  const out: string[] = [];
  const result = await restore({
    layersDir: layers,
    group: GROUP,
    previousMetadata: previousMetadata(sha),
    cache: await openCache(location, AMD64),
    platformApi,
    skipLayers: opts.skipLayers ?? false,
    ...(opts.uid !== undefined && opts.gid !== undefined ? { uid: opts.uid, gid: opts.gid } : {}),
    logger: createLogger({ write: (l) => out.push(l) }),
  });
  return { layers, result, sha, log: out.join('\n') };
}

describe('restore', () => {
  it('restores launch-only layers as metadata, agreeing launch+cache layers with contents, and store.toml', async () => {
    const { layers, result, sha, log } = await run('0.13');
    const bp = join(layers, 'example_node');
    expect(result.layers).toEqual([
      { buildpack: 'example/node', layer: 'lc', sha: sha.lc, restored: 'content' },
      { buildpack: 'example/node', layer: 'runtime', sha: FAKE_SHA, restored: 'metadata' },
    ]);
    // launch-only: metadata and diffID, no contents.
    expect(parseToml(await readFile(join(bp, 'runtime.toml'), 'utf8'), 'runtime.toml')).toEqual({
      metadata: { version: '20.1' },
    });
    expect(await readFile(join(bp, 'runtime.sha'), 'utf8')).toBe(FAKE_SHA);
    await expect(stat(join(bp, 'runtime'))).rejects.toThrow();
    // launch+cache with the same diffID in image and cache: contents too.
    expect(await readFile(join(bp, 'lc', 'file'), 'utf8')).toBe('lc\n');
    // launch+cache whose cache copy differs from the image: neither metadata nor contents.
    expect(result.skipped.map((s) => s.layer)).toEqual(['lc-changed', 'lc-new']);
    expect(log).toMatch(/Skipping restore for layer "example\/node:lc-changed"/);
    // build=true launch=true cache=false: never restored.
    expect((await readdir(bp)).sort()).toEqual([
      'lc',
      'lc.sha',
      'lc.toml',
      'runtime.sha',
      'runtime.toml',
      'store.toml',
    ]);
    expect(parseToml(await readFile(join(bp, 'store.toml'), 'utf8'), 'store.toml')).toEqual({
      metadata: { counter: 3 },
    });
    // A buildpack that left the group gets nothing back.
    expect(await readdir(layers)).toEqual(['example_node']);
  });

  it('skips a truncated cache layer with a warning (a tar entry declaring more bytes than follow)', async () => {
    const { location, sha } = await cacheWithLaunchLayers();
    const dir = dirCachePaths((location as { dir: string }).dir, AMD64).committed;
    const name = (await readdir(dir)).find((f) => f.includes((sha.lc ?? '').slice('sha256:'.length)));
    if (!name) throw new Error(`no cache file for ${sha.lc} in ${dir}`);
    // Cut one byte into the content of the layer's file: its header declares more than follows.
    const bytes = await readFile(join(dir, name));
    let header = -1;
    for (let at = 0; at + 512 <= bytes.length; at += 512)
      if (
        bytes
          .subarray(at, at + 100)
          .toString('latin1')
          .replace(/\0+$/, '')
          .endsWith('lc/file')
      )
        header = at;
    expect(header).toBeGreaterThanOrEqual(0);
    await writeFile(join(dir, name), bytes.subarray(0, header + 512 + 1));
    const layers = join(root, `restored-${++n}`);
    const out: string[] = [];
    const result = await restore({
      layersDir: layers,
      group: GROUP,
      previousMetadata: previousMetadata(sha),
      cache: await openCache(location, AMD64),
      platformApi: '0.13',
      skipLayers: false,
      logger: createLogger({ write: (l) => out.push(l) }),
    });
    expect(result.layers.map((l) => l.layer)).toEqual(['runtime']);
    expect(result.skipped.map((s) => s.layer)).toContain('lc');
    expect(out.join('\n')).toMatch(/example\/node:lc/);
    await expect(stat(join(layers, 'example_node', 'lc'))).rejects.toThrow();
  });

  it('Platform API 0.14: a launch+cache layer missing from the previous image comes from the cache', async () => {
    const { layers, result, sha } = await run('0.14');
    expect(result.layers.map((l) => l.layer)).toEqual(['lc', 'lc-new', 'runtime']);
    expect(result.layers.find((l) => l.layer === 'lc-new')?.sha).toBe(sha['lc-new']);
    expect(await readFile(join(layers, 'example_node', 'lc-new', 'file'), 'utf8')).toBe('lc-new\n');
  });

  it('skip-layers restores store.toml only', async () => {
    const { layers, result } = await run('0.13', { skipLayers: true });
    expect(result.layers).toEqual([]);
    expect(await readdir(join(layers, 'example_node'))).toEqual(['store.toml']);
  });

  it('as root, -uid/-gid own the restored files; contents keep the owner recorded in the tar', async () => {
    requireRoot('restoring with -uid/-gid (the restorer chowns only as root)');
    const { layers } = await run('0.13', { uid: 4321, gid: 4322 });
    const bp = join(layers, 'example_node');
    for (const f of ['runtime.toml', 'runtime.sha', 'store.toml', 'lc.toml']) {
      const st = await stat(join(bp, f));
      expect([st.uid, st.gid]).toEqual([4321, 4322]);
    }
    expect((await stat(bp)).uid).toBe(4321);
    // exportCache's default owner for cached tars: 1000:1000, as the exporter's buildpack layers.
    const content = await stat(join(bp, 'lc', 'file'));
    expect([content.uid, content.gid]).toEqual([1000, 1000]);
  });

  it('keep: a candidate dir with the cached diffID recorded stays; any other candidate is removed', async () => {
    const { location, sha } = await cacheWithLaunchLayers();
    const layers = join(root, `restored-${++n}`);
    const bp = join(layers, 'example_node');
    // What a previous build left: `lc` unchanged (recorded with the cached diffID), `lc-changed` recorded with
    // another diffID, `runtime` (launch-only: restored as metadata only) and one of a buildpack not in the group.
    for (const name of ['lc', 'lc-changed', 'runtime']) {
      await mkdir(join(bp, name), { recursive: true });
      await writeFile(join(bp, name, 'left'), 'from the last build\n');
    }
    await mkdir(join(layers, 'example_gone', 'old'), { recursive: true });
    const recordedSha: Record<string, string> = {
      'example/node:lc': sha.lc!,
      'example/node:lc-changed': FAKE_SHA,
      'example/node:runtime': FAKE_SHA,
      'example/gone:old': FAKE_SHA,
    };
    const asked: string[] = [];
    const result = await restore({
      layersDir: layers,
      group: GROUP,
      previousMetadata: previousMetadata(sha),
      cache: await openCache(location, AMD64),
      platformApi: '0.14',
      keep: {
        candidates: Object.keys(recordedSha),
        recorded: async (key) => {
          asked.push(key);
          return recordedSha[key];
        },
      },
    });
    expect(result.layers.map((l) => [l.layer, l.restored])).toEqual([
      ['lc', 'kept'],
      ['lc-new', 'content'],
      ['runtime', 'metadata'],
    ]);
    // Kept: not extracted (the file the last build left is there, the cached one is not).
    expect(await readdir(join(bp, 'lc'))).toEqual(['left']);
    expect(await readFile(join(bp, 'lc.sha'), 'utf8')).toBe(sha.lc);
    expect(await stat(join(bp, 'lc-changed')).catch(() => undefined)).toBeUndefined();
    expect(await stat(join(bp, 'runtime')).catch(() => undefined)).toBeUndefined();
    expect(await stat(join(layers, 'example_gone', 'old')).catch(() => undefined)).toBeUndefined();
    // Only cache layers to restore are looked at.
    expect(asked.sort()).toEqual(['example/node:lc']);

    // The same record, but the cache lost the layer: not kept, and the dir is gone.
    await rm(join(dirCachePaths((location as { dir: string }).dir, AMD64).committed, `${sha.lc}.tar`));
    const lost = await restore({
      layersDir: layers,
      group: GROUP,
      previousMetadata: previousMetadata(sha),
      cache: await openCache(location, AMD64),
      platformApi: '0.14',
      keep: { candidates: ['example/node:lc'], recorded: async (key) => recordedSha[key] },
    });
    expect(lost.layers.find((l) => l.layer === 'lc')).toBeUndefined();
    expect(await stat(join(bp, 'lc')).catch(() => undefined)).toBeUndefined();
  });
});
