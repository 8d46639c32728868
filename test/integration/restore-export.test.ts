import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CacheLocation, openCache } from '../../src/cache/open.js';
import { exportCache } from '../../src/phase/cache.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import type { Digest } from '../../src/oci/digest.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { analyze } from '../../src/phase/analyze.js';
import { exportImage } from '../../src/phase/export.js';
import { restore } from '../../src/phase/restore.js';
import type { BuildMetadata } from '../../src/platform/metadata.js';
import { writeTestImage } from '../helpers/images.js';

/**
 * Exporter, cache, analyzer and restorer together: a launch+cache layer must tar to the same diffID for the
 * app image and the cache, or the restorer (which needs both records to agree) would never restore it.
 */
const AMD64 = parsePlatform('linux/amd64');
const group = { group: [{ id: 'example/ruby', version: '1.0.0', api: '0.10' }] };

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-restore-export-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function buildOutput(name: string): Promise<{ layers: string; app: string }> {
  const layers = join(root, name, 'layers');
  const app = join(root, name, 'workspace');
  const bp = join(layers, 'example_ruby');
  await mkdir(join(bp, 'gems'), { recursive: true });
  await writeFile(join(bp, 'gems', 'rack.rb'), 'rack\n');
  await writeFile(
    join(bp, 'gems.toml'),
    '[types]\nlaunch = true\ncache = true\n\n[metadata]\nlock = "abc"\n',
  );
  await mkdir(join(bp, 'ruby'), { recursive: true });
  await writeFile(join(bp, 'ruby', 'ruby'), 'ruby\n');
  await writeFile(join(bp, 'ruby.toml'), '[types]\nlaunch = true\n\n[metadata]\nversion = "3.3"\n');
  await mkdir(join(layers, 'sbom', 'launch', 'example_ruby', 'gems'), { recursive: true });
  await writeFile(
    join(layers, 'sbom', 'launch', 'example_ruby', 'gems', 'sbom.cdx.json'),
    '{"bomFormat":"CycloneDX"}',
  );
  await mkdir(app, { recursive: true });
  await writeFile(join(app, 'app.rb'), 'puts 1\n');
  return { layers, app };
}

describe('export → analyze → restore', () => {
  it('restores the launch+cache layer and the launch-only metadata of the exported image', async () => {
    const store = await openLayoutStore(join(root, 'images'), { create: true });
    await writeTestImage(store, { tag: 'run', platform: 'linux/amd64' });
    const cache: CacheLocation = { kind: 'dir', dir: join(root, 'cache') };
    const metadata: BuildMetadata = {
      buildpacks: [{ id: 'example/ruby', version: '1.0.0', api: '0.10' }],
      extensions: [],
      processes: [],
      slices: [],
      labels: [],
      buildpackDefaultProcessType: undefined,
      bom: [],
    };

    const first = await buildOutput('b1');
    const exported = await exportImage({
      layersDir: first.layers,
      appDir: first.app,
      group,
      metadata,
      runImage: { store, target: 'run' },
      platform: AMD64,
      outputs: [{ store, tags: ['app'] }],
    });
    const appSha = exported.lifecycleMetadata.buildpacks[0]?.layers.gems?.sha as Digest;
    expect(appSha).toMatch(/^sha256:/);
    const cached = await exportCache({
      location: cache,
      layersDir: first.layers,
      group: group.group,
      target: AMD64,
    });
    // Same tar for the image and the cache.
    expect(cached.layers).toEqual([
      { buildpack: 'example/ruby', layer: 'gems', diffId: appSha, outcome: 'added' },
    ]);

    const analyzed = await analyze({
      runImage: { store, target: 'run' },
      previousImage: { store, target: 'app' },
      platform: AMD64,
    });
    const layers = join(root, 'b2', 'layers');
    await mkdir(layers, { recursive: true });
    // The analyzer brings back the previous launch SBOM (and only that layer).
    await analyze({
      runImage: { store, target: 'run' },
      previousImage: { store, target: 'app' },
      platform: AMD64,
      layersDir: layers,
    });
    expect(
      await readFile(join(layers, 'sbom', 'launch', 'example_ruby', 'gems', 'sbom.cdx.json'), 'utf8'),
    ).toBe('{"bomFormat":"CycloneDX"}');
    expect(analyzed.previousMetadata?.sbom?.sha).toMatch(/^sha256:/);
    const result = await restore({
      layersDir: layers,
      group: group.group,
      previousMetadata: analyzed.previousMetadata!,
      cache: await openCache(cache, AMD64),
      platformApi: '0.13',
    });
    expect(result.skipped).toEqual([]);
    expect(result.layers.map((l) => [l.layer, l.restored])).toEqual([
      ['gems', 'content'],
      ['ruby', 'metadata'],
    ]);
    expect(await readFile(join(layers, 'example_ruby', 'gems', 'rack.rb'), 'utf8')).toBe('rack\n');
    expect(await readFile(join(layers, 'example_ruby', 'ruby.toml'), 'utf8')).toMatch(/version = "3.3"/);

    // The exporter's diffID lets the next cache export reuse the layer without reading it.
    const again = await exportCache({
      location: cache,
      layersDir: first.layers,
      group: group.group,
      target: AMD64,
      knownDiffIds: new Map([['example/ruby:gems', appSha]]),
    });
    expect(again.layers[0]?.outcome).toBe('reused');
  });
});
