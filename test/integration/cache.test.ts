import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { dirCachePaths } from '../../src/cache/dir-cache.js';
import { type CacheLocation, openCache } from '../../src/cache/open.js';
import { exportCache } from '../../src/phase/cache.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { createRegistryStore } from '../../src/image/registry-store.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { restore } from '../../src/phase/restore.js';
import { createLogger } from '../../src/util/log.js';
import { parseToml } from '../../src/util/toml.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';

/**
 * Both cache kinds with real components: layer tars written by the archive writer, a dir cache on disk, an
 * image cache in a real docker-registry and in an OCI layout; the restorer extracts what was cached.
 */
const AMD64 = parsePlatform('linux/amd64');
const ARM64 = parsePlatform('linux/arm64');
const GROUP = [{ id: 'example/node', version: '1.0.0', api: '0.10' }];

let root: string;
let registry: TestRegistry;
let n = 0;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-cache-'));
  registry = await startRegistry();
});
afterAll(async () => {
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

/** A layers dir as a buildpack left it: a cache=true layer with content, a launch-only one, a scratch dir. */
async function builtLayers(opts: { version?: string } = {}): Promise<string> {
  const layers = join(root, `layers-${++n}`);
  const bp = join(layers, 'example_node');
  await mkdir(join(bp, 'deps', 'lib'), { recursive: true });
  await writeFile(join(bp, 'deps', 'lib', 'dep.js'), `module.exports = '${opts.version ?? 'v1'}';\n`);
  await writeFile(
    join(bp, 'deps.toml'),
    `[types]\ncache = true\nbuild = true\n\n[metadata]\nversion = "${opts.version ?? 'v1'}"\n`,
  );
  await mkdir(join(bp, 'runtime'), { recursive: true });
  await writeFile(join(bp, 'runtime', 'bin'), 'runtime\n');
  await writeFile(join(bp, 'runtime.toml'), '[types]\nlaunch = true\n');
  await mkdir(join(bp, 'scratch'), { recursive: true });
  return layers;
}

function lines(): { logger: ReturnType<typeof createLogger>; text: () => string } {
  const out: string[] = [];
  return { logger: createLogger({ level: 'debug', write: (l) => out.push(l) }), text: () => out.join('\n') };
}

async function restoreInto(location: CacheLocation, platform = AMD64, clear = false) {
  const layers = join(root, `restored-${++n}`);
  await mkdir(layers, { recursive: true });
  const log = lines();
  const cache = await openCache(location, platform, { logger: log.logger, clear });
  const result = await restore({
    layersDir: layers,
    group: GROUP,
    cache,
    platformApi: '0.13',
    logger: log.logger,
  });
  return { layers, result, log: log.text() };
}

async function expectRestoredDeps(layers: string, version = 'v1') {
  const bp = join(layers, 'example_node');
  expect(await readFile(join(bp, 'deps', 'lib', 'dep.js'), 'utf8')).toBe(`module.exports = '${version}';\n`);
  const toml = parseToml(await readFile(join(bp, 'deps.toml'), 'utf8'), 'deps.toml');
  // Restored metadata never carries [types]: the buildpack must re-declare them to keep the layer.
  expect(toml).toEqual({ metadata: { version } });
  expect((await readFile(join(bp, 'deps.sha'), 'utf8')).startsWith('sha256:')).toBe(true);
  // Only cache=true layers are cached: the launch-only layer and the scratch dir are not there.
  await expect(stat(join(bp, 'runtime'))).rejects.toThrow();
  await expect(stat(join(bp, 'scratch'))).rejects.toThrow();
}

describe('dir cache', () => {
  it('restores a cache=true layer with its metadata, reuses it unchanged, replaces it when changed', async () => {
    const cacheDir = join(root, 'cache-dir');
    const location: CacheLocation = { kind: 'dir', dir: cacheDir };
    const first = await exportCache({
      location,
      layersDir: await builtLayers(),
      group: GROUP,
      target: AMD64,
    });
    expect(first.layers).toEqual([
      {
        buildpack: 'example/node',
        layer: 'deps',
        diffId: expect.stringMatching(/^sha256:/),
        outcome: 'added',
      },
    ]);
    const { committed } = dirCachePaths(cacheDir, AMD64);
    expect((await readdir(committed)).sort()).toEqual(
      [`${first.layers[0]!.diffId}.tar`, 'io.buildpacks.lifecycle.cache.metadata'].sort(),
    );
    // No staging or backup dir is left behind.
    expect(await readdir(join(cacheDir, 'linux-amd64'))).toEqual(['committed']);

    const { layers, result } = await restoreInto(location);
    expect(result.layers).toEqual([
      { buildpack: 'example/node', layer: 'deps', sha: first.layers[0]!.diffId, restored: 'content' },
    ]);
    await expectRestoredDeps(layers);

    const second = await exportCache({
      location,
      layersDir: await builtLayers(),
      group: GROUP,
      target: AMD64,
    });
    expect(second.layers.map((l) => [l.diffId, l.outcome])).toEqual([[first.layers[0]!.diffId, 'reused']]);

    const third = await exportCache({
      location,
      layersDir: await builtLayers({ version: 'v2' }),
      group: GROUP,
      target: AMD64,
    });
    expect(third.layers[0]!.outcome).toBe('added');
    expect(third.layers[0]!.diffId).not.toBe(first.layers[0]!.diffId);
    // The old tar is gone with the old commit.
    expect(await readdir(committed)).not.toContain(`${first.layers[0]!.diffId}.tar`);
    await expectRestoredDeps((await restoreInto(location)).layers, 'v2');
  });

  it('never feeds an arm64 cache to an amd64 build', async () => {
    const location: CacheLocation = { kind: 'dir', dir: join(root, 'cache-arch') };
    await exportCache({ location, layersDir: await builtLayers(), group: GROUP, target: ARM64 });
    const amd = await restoreInto(location, AMD64);
    expect(amd.result.layers).toEqual([]);
    await expect(stat(join(amd.layers, 'example_node', 'deps'))).rejects.toThrow();
    const arm = await restoreInto(location, ARM64);
    expect(arm.result.layers.map((l) => l.layer)).toEqual(['deps']);
  });

  it("clear: restores nothing and deletes that platform's cache, leaving other platforms alone", async () => {
    const cacheDir = join(root, 'cache-clear');
    const location: CacheLocation = { kind: 'dir', dir: cacheDir };
    await exportCache({ location, layersDir: await builtLayers(), group: GROUP, target: AMD64 });
    await exportCache({ location, layersDir: await builtLayers(), group: GROUP, target: ARM64 });
    const cleared = await restoreInto(location, AMD64, true);
    expect(cleared.result.layers).toEqual([]);
    expect(await readdir(cacheDir)).toEqual(['linux-arm64']);
    // The next export starts from nothing.
    const again = await exportCache({
      location,
      layersDir: await builtLayers(),
      group: GROUP,
      target: AMD64,
    });
    expect(again.layers[0]!.outcome).toBe('added');
  });

  it('a tar that does not match its recorded diffID is not restored', async () => {
    const cacheDir = join(root, 'cache-corrupt');
    const location: CacheLocation = { kind: 'dir', dir: cacheDir };
    const res = await exportCache({ location, layersDir: await builtLayers(), group: GROUP, target: AMD64 });
    const { committed } = dirCachePaths(cacheDir, AMD64);
    const other = await exportCache({
      location: { kind: 'dir', dir: join(root, 'cache-other') },
      layersDir: await builtLayers({ version: 'v9' }),
      group: GROUP,
      target: AMD64,
    });
    const otherTar = join(
      dirCachePaths(join(root, 'cache-other'), AMD64).committed,
      `${other.layers[0]!.diffId}.tar`,
    );
    await writeFile(join(committed, `${res.layers[0]!.diffId}.tar`), await readFile(otherTar));
    const { layers, result, log } = await restoreInto(location);
    expect(result.layers).toEqual([]);
    expect(result.skipped[0]?.reason).toMatch(/expected sha256:/);
    expect(log).toMatch(/Skipping restore for layer example\/node:deps: /);
    await expect(stat(join(layers, 'example_node', 'deps'))).rejects.toThrow();
    await expect(stat(join(layers, 'example_node', 'deps.toml'))).rejects.toThrow();
  });
});

describe('image cache', () => {
  it('in a registry: restores the layer with its metadata; an unchanged rebuild uploads no layer bytes', async () => {
    const store = createRegistryStore(
      { registry: registry.host, repository: 'app-cache' },
      { insecureRegistries: [registry.host] },
    );
    const location: CacheLocation = { kind: 'image', store, tag: 'cache' };
    const first = await exportCache({
      location,
      layersDir: await builtLayers(),
      group: GROUP,
      target: AMD64,
    });
    expect(first.layers[0]!.outcome).toBe('added');

    const { layers, result } = await restoreInto(location);
    expect(result.layers.map((l) => [l.layer, l.restored])).toEqual([['deps', 'content']]);
    await expectRestoredDeps(layers);

    registry.resetCounters();
    const second = await exportCache({
      location,
      layersDir: await builtLayers(),
      group: GROUP,
      target: AMD64,
    });
    expect(second.layers[0]!.outcome).toBe('reused');
    expect(registry.counters().blobUploads).toBe(0);
    // Only the previous cache image's config is read; no layer is downloaded.
    expect(registry.counters().blobGets).toBe(1);
  });

  it('in a layout: restores the layer; a cache image of another platform is ignored with a log line', async () => {
    const store = await openLayoutStore(join(root, 'cache-layout'), { create: true });
    const location: CacheLocation = { kind: 'image', store, tag: 'build-cache' };
    await exportCache({ location, layersDir: await builtLayers(), group: GROUP, target: AMD64 });
    const ok = await restoreInto(location);
    await expectRestoredDeps(ok.layers);

    // skopeo, an independent reader, sees the platform and the metadata label; a second export of the same
    // layers gives the same cache image digest.
    const first = await store.resolve('build-cache');
    const { stdout } = await execa('skopeo', ['inspect', '--config', `oci:${store.dir}:build-cache`]);
    const config = JSON.parse(stdout) as {
      os: string;
      architecture: string;
      config: { Labels: Record<string, string> };
    };
    expect([config.os, config.architecture]).toEqual(['linux', 'amd64']);
    expect(JSON.parse(config.config.Labels['io.buildpacks.lifecycle.cache.metadata'] ?? '{}')).toMatchObject({
      buildpacks: [{ key: 'example/node', layers: { deps: { cache: true, data: { version: 'v1' } } } }],
    });
    const again = await exportCache({
      location,
      layersDir: await builtLayers(),
      group: GROUP,
      target: AMD64,
    });
    expect(again.layers[0]?.outcome).toBe('reused');
    expect((await store.resolve('build-cache'))?.digest).toBe(first?.digest);

    const armStore = await openLayoutStore(join(root, 'cache-layout-arm'), { create: true });
    const armLocation: CacheLocation = { kind: 'image', store: armStore, tag: 'build-cache' };
    await exportCache({ location: armLocation, layersDir: await builtLayers(), group: GROUP, target: ARM64 });
    const wrong = await restoreInto(armLocation, AMD64);
    expect(wrong.result.layers).toEqual([]);
    expect(wrong.log).toMatch(
      /Ignoring cache image .* built for linux\/arm64, this build targets linux\/amd64/,
    );
  });
});
