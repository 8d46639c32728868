import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  type LayerResult,
  type MemoryEntry,
  writeLayer,
  writeLayerFromEntries,
} from '../../src/archive/index.js';
import { platformOrderFromFile } from '../../src/platform/order.js';
import { type ResolvedBuilder, resolveBuilder } from '../../src/builder/resolve.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import type { ImageStore } from '../../src/image/store.js';
import { openImage } from '../../src/image/transport.js';
import { type Digest, sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { parsePlatform, platformToSpec } from '../../src/oci/platform.js';
import { detect } from '../../src/phase/detect.js';
import { canonicalJson } from '../../src/util/json.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';

/**
 * `--builder REF` against builder images we assemble here: a base layer (a stand-in for the OS, with a stale
 * /cnb that later layers override), one layer per buildpack under /cnb/buildpacks, and a top layer with
 * /cnb/order.toml, /cnb/run.toml and a whiteout. Pushed to a real registry and written to an OCI layout;
 * resolveBuilder must pick out /cnb, download only what it needs, and the result must run detection.
 */

const DETECT = resolve('test/fixtures/buildpacks/detect/buildpacks');
const BUILDPACKS = ['test_node', 'test_npm', 'test_js', 'test_python'] as const;
const BP_IDS: Record<(typeof BUILDPACKS)[number], string> = {
  test_node: 'test/node',
  test_npm: 'test/npm',
  test_js: 'test/js',
  test_python: 'test/python',
};

let registry: TestRegistry;
let tmp: string;
let work: string;
let layerCount = 0;

interface Layer extends LayerResult {
  file: string;
}

async function layerFromEntries(entries: MemoryEntry[]): Promise<Layer> {
  const file = join(work, `layer-${layerCount++}.tgz`);
  return { ...(await writeLayerFromEntries(entries, { out: file })), file };
}

async function layerFromDir(dir: string, prefix: string): Promise<Layer> {
  const file = join(work, `layer-${layerCount++}.tgz`);
  return { ...(await writeLayer({ dir, prefix, out: file })), file };
}

/** Writes config + manifest over layers already made; returns the manifest digest and size. */
async function writeBuilderImage(
  store: ImageStore,
  opts: { layers: Layer[]; labels?: Record<string, string>; platform?: string; tag?: string },
): Promise<{ digest: Digest; size: number; platform: string }> {
  const platform = opts.platform ?? 'linux/amd64';
  for (const l of opts.layers)
    await store.putBlob({ digest: l.digest, size: l.size, open: () => createReadStream(l.file) });
  const config = {
    ...platformToSpec(parsePlatform(platform)),
    created: '1980-01-01T00:00:01Z',
    config: { Env: ['PATH=/bin'], User: '1000:1000', ...(opts.labels ? { Labels: opts.labels } : {}) },
    rootfs: { type: 'layers', diff_ids: opts.layers.map((l) => l.diffId) },
    history: opts.layers.map(() => ({ created: '1980-01-01T00:00:01Z', created_by: 'builder test' })),
  };
  const cfg = Buffer.from(canonicalJson(config));
  await store.putBlob({ digest: sha256Digest(cfg), size: cfg.length, open: () => Readable.from([cfg]) });
  const manifest = Buffer.from(
    canonicalJson({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: sha256Digest(cfg), size: cfg.length },
      layers: opts.layers.map((l) => ({ mediaType: MediaType.ociLayerGzip, digest: l.digest, size: l.size })),
    }),
  );
  const digest = await store.putManifest({
    bytes: manifest,
    mediaType: MediaType.ociManifest,
    ...(opts.tag ? { tag: opts.tag } : {}),
  });
  return { digest, size: manifest.length, platform };
}

const orderToml = (...groups: string[][]) =>
  groups
    .map((g) => `[[order]]\n${g.map((id) => `[[order.group]]\nid = "${id}"\nversion = "1.0.0"\n`).join('')}`)
    .join('');

let base: Layer;
let bpLayers: Layer[];
let top: Layer;
let topPython: Layer;
let labels: Record<string, string>;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-builder-resolve-'));
  work = join(tmp, 'work');
  await mkdir(work);
  registry = await startRegistry({});

  // The "OS": a large-ish file that must never be downloaded when labels say where /cnb is, plus a stale /cnb.
  base = await layerFromEntries([
    { path: 'bin/sh', type: 'file', mode: 0o755, content: Buffer.alloc(256 * 1024, 7) },
    { path: 'etc/os-release', type: 'file', content: 'ID=ubuntu\nVERSION_ID="22.04"\n' },
    { path: 'cnb/order.toml', type: 'file', content: orderToml(['test/stale']) },
    {
      path: 'cnb/buildpacks/test_stale/1.0.0/buildpack.toml',
      type: 'file',
      content: 'api = "0.12"\n[buildpack]\nid = "test/stale"\nversion = "1.0.0"\n',
    },
  ]);
  bpLayers = [];
  for (const bp of BUILDPACKS)
    bpLayers.push(await layerFromDir(join(DETECT, bp, '1.0.0'), `cnb/buildpacks/${bp}/1.0.0`));
  top = await layerFromEntries([
    { path: 'cnb/order.toml', type: 'file', content: orderToml(['test/js'], ['test/python']) },
    { path: 'cnb/run.toml', type: 'file', content: '[[images]]\nimage = "from-run-toml/run:1"\n' },
    { path: 'cnb/buildpacks/.wh.test_stale', type: 'file', content: '' },
    // Longer than a ustar name: must survive the filter (PAX headers).
    { path: `cnb/buildpacks/test_python/1.0.0/${'long-'.repeat(30)}.txt`, type: 'file', content: 'long\n' },
    { path: 'cnb/lifecycle/launcher', type: 'file', mode: 0o755, content: 'not extracted\n' },
    { path: 'workspace', type: 'dir' },
  ]);
  topPython = await layerFromEntries([
    { path: 'cnb/order.toml', type: 'file', content: orderToml(['test/python']) },
  ]);
  const layersLabel: Record<string, Record<string, { api: string; layerDiffID: string }>> = {};
  BUILDPACKS.forEach((bp, i) => {
    layersLabel[BP_IDS[bp]] = { '1.0.0': { api: '0.12', layerDiffID: bpLayers[i]!.diffId } };
  });
  labels = {
    'io.buildpacks.builder.metadata': JSON.stringify({
      description: 'test builder',
      images: [{ image: 'registry.example/run:jammy', mirrors: ['mirror.example/run:jammy'] }],
      stack: { runImage: { image: 'legacy.example/run:1', mirrors: [] } },
    }),
    'io.buildpacks.buildpack.layers': JSON.stringify(layersLabel),
  };
});

afterAll(async () => {
  await registry?.stop();
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** Detection over the resolved builder on a package.json app: proves the buildpacks are really runnable. */
async function detectWith(b: ResolvedBuilder): Promise<string[]> {
  const ws = await mkdtemp(join(tmp, 'ws-'));
  await mkdir(join(ws, 'app'));
  await mkdir(join(ws, 'platform'));
  await writeFile(join(ws, 'app', 'package.json'), '{}\n');
  const result = await detect({
    appDir: join(ws, 'app'),
    platformDir: join(ws, 'platform'),
    store: b.store,
    order: platformOrderFromFile(b.order),
    target: { os: 'linux', arch: 'amd64', distro: { name: 'ubuntu', version: '22.04' } },
  });
  return result.group.map((g) => g.id);
}

describe('resolveBuilder: builder image in a registry', () => {
  it('downloads only the top layer and the labelled buildpack layers; order, run images and buildpacks are right', async () => {
    const ref = `${registry.host}/builders/demo:1`;
    const dest = await openImage(ref, { insecureRegistries: [registry.host], create: true });
    await writeBuilderImage(dest.store, { layers: [base, ...bpLayers, top], labels, tag: '1' });

    registry.resetCounters();
    const scratch = join(tmp, 'scratch-registry');
    const b = await resolveBuilder(ref, {
      cwd: tmp,
      scratchDir: scratch,
      insecureRegistries: [registry.host],
    });
    const fetched = registry.requests.filter(
      (r) => r.kind === 'blob' && r.method === 'GET' && r.status === 200,
    );
    // config + top layer + 4 buildpack layers; the base layer (with its 256 KiB file) stays in the registry.
    const digests = fetched.map((r) => r.path.split('/').at(-1));
    expect(digests).toHaveLength(6);
    expect(digests).toEqual(expect.arrayContaining([...bpLayers.map((l) => l.digest), top.digest]));
    expect(digests).not.toContain(base.digest);

    expect(b.name).toBe(ref);
    expect(b.runImages).toEqual(['registry.example/run:jammy', 'mirror.example/run:jammy']);
    expect(b.order.order.map((g) => g.group.map((e) => `${e.id}@${e.version}`))).toEqual([
      ['test/js@1.0.0'],
      ['test/python@1.0.0'],
    ]);
    expect((await b.store.lookup('test/npm', '1.0.0')).dir).toBe(
      join(b.store.buildpacksDir, 'test_npm', '1.0.0'),
    );
    expect(b.store.buildpacksDir.startsWith(`${scratch}/`)).toBe(true);
    // Only /cnb/order.toml, run.toml and buildpacks/ were kept.
    const cnb = join(b.store.buildpacksDir, '..');
    expect((await readdir(cnb)).sort()).toEqual(['buildpacks', 'order.toml', 'run.toml']);
    expect(await readdir(join(cnb, '..'))).toEqual(['cnb']);
    await expect(b.store.lookup('test/stale', '1.0.0')).rejects.toMatchObject({
      code: 'BUILDPACK_NOT_FOUND',
    });

    expect(await readdir(join(b.store.buildpacksDir, 'test_python', '1.0.0'))).toContain(
      `${'long-'.repeat(30)}.txt`,
    );
    expect(await detectWith(b)).toEqual(['test/node', 'test/npm']);
    await b.cleanup();
    expect(await readdir(scratch)).toEqual([]);
  });

  it('says so when the reference names no image', async () => {
    await expect(
      resolveBuilder(`${registry.host}/builders/missing:1`, {
        cwd: tmp,
        scratchDir: join(tmp, 'scratch-missing'),
        insecureRegistries: [registry.host],
      }),
    ).rejects.toMatchObject({ code: 'BUILDER_NOT_FOUND' });
  });
});

describe('resolveBuilder: builder image in an OCI layout', () => {
  it('without pack’s layer label reads every layer and applies whiteouts across them; run.toml names the run image', async () => {
    const store = await openLayoutStore(join(tmp, 'layout'), { create: true });
    await writeBuilderImage(store, { layers: [base, ...bpLayers, top], tag: 'plain' });
    const scratch = join(tmp, 'scratch-layout');
    // Relative to cwd, not to the process.
    const b = await resolveBuilder('oci:layout:plain', { cwd: tmp, scratchDir: scratch });
    expect(b.runImages).toEqual(['from-run-toml/run:1']);
    expect(b.order.order.map((g) => g.group[0]?.id)).toEqual(['test/js', 'test/python']);
    // test/stale came from the base layer and the top layer whited it out.
    expect(await readdir(b.store.buildpacksDir)).not.toContain('test_stale');
    expect((await readdir(b.store.buildpacksDir)).sort()).toEqual([...BUILDPACKS].sort());
    expect(await detectWith(b)).toEqual(['test/node', 'test/npm']);
    await b.cleanup();
  });

  it('reads the legacy stack.runImage of the metadata label', async () => {
    const store = await openLayoutStore(join(tmp, 'layout'), { create: true });
    const legacy = JSON.stringify({
      stack: { runImage: { image: 'legacy.example/run:1', mirrors: ['m.example/run:1'] } },
    });
    await writeBuilderImage(store, {
      layers: [base, ...bpLayers, top],
      labels: { 'io.buildpacks.builder.metadata': legacy },
      tag: 'legacy',
    });
    const b = await resolveBuilder(`oci:${join(tmp, 'layout')}:legacy`, {
      cwd: '/',
      scratchDir: join(tmp, 'scratch-legacy'),
    });
    expect(b.runImages).toEqual(['legacy.example/run:1', 'm.example/run:1']);
    await b.cleanup();
  });

  it('picks the index child for the requested platform', async () => {
    const store = await openLayoutStore(join(tmp, 'layout'), { create: true });
    const amd = await writeBuilderImage(store, { layers: [base, ...bpLayers, top], labels });
    const arm = await writeBuilderImage(store, {
      layers: [base, ...bpLayers, top, topPython],
      labels,
      platform: 'linux/arm64',
    });
    const index = Buffer.from(
      canonicalJson({
        schemaVersion: 2,
        mediaType: MediaType.ociIndex,
        manifests: [amd, arm].map((m) => ({
          mediaType: MediaType.ociManifest,
          digest: m.digest,
          size: m.size,
          platform: platformToSpec(parsePlatform(m.platform)),
        })),
      }),
    );
    await store.putManifest({ bytes: index, mediaType: MediaType.ociIndex, tag: 'multi' });
    const loc = `oci:${join(tmp, 'layout')}:multi`;
    const forArm = await resolveBuilder(loc, {
      cwd: '/',
      scratchDir: join(tmp, 'scratch-multi'),
      platform: parsePlatform('linux/arm64'),
    });
    expect(forArm.order.order.map((g) => g.group[0]?.id)).toEqual(['test/python']);
    const forAmd = await resolveBuilder(loc, {
      cwd: '/',
      scratchDir: join(tmp, 'scratch-multi'),
      platform: parsePlatform('linux/amd64'),
    });
    expect(forAmd.order.order.map((g) => g.group[0]?.id)).toEqual(['test/js', 'test/python']);
    await forArm.cleanup();
    await forAmd.cleanup();
    await expect(
      resolveBuilder(loc, {
        cwd: '/',
        scratchDir: join(tmp, 'scratch-multi'),
        platform: parsePlatform('linux/s390x'),
      }),
    ).rejects.toMatchObject({ code: 'NO_MATCHING_PLATFORM' });
  });

  it('refuses an image without /cnb/order.toml, cleaning up', async () => {
    const store = await openLayoutStore(join(tmp, 'layout'), { create: true });
    const plain = await layerFromEntries([{ path: 'bin/sh', type: 'file', mode: 0o755, content: 'sh' }]);
    await writeBuilderImage(store, { layers: [plain], tag: 'not-a-builder' });
    const scratch = join(tmp, 'scratch-invalid');
    await expect(
      resolveBuilder(`oci:${join(tmp, 'layout')}:not-a-builder`, { cwd: '/', scratchDir: scratch }),
    ).rejects.toMatchObject({ code: 'BUILDER_INVALID', message: expect.stringContaining('/cnb/order.toml') });
    expect(await readdir(scratch)).toEqual([]);
  });
});

describe('resolveBuilder: builder.toml directory', () => {
  it('stages directory and .tgz buildpacks and runs detection with them', async () => {
    const dir = join(tmp, 'builder-src');
    await mkdir(join(dir, 'bps'), { recursive: true });
    for (const bp of ['test_node', 'test_npm'])
      execFileSync('tar', ['-czf', join(dir, 'bps', `${bp}.tgz`), '-C', join(DETECT, bp), '1.0.0']);
    await writeFile(
      join(dir, 'builder.toml'),
      `description = "from builder.toml"
[[buildpacks]]
uri = "bps/test_node.tgz"
[[buildpacks]]
uri = "bps/test_npm.tgz"
[[buildpacks]]
uri = "${join(DETECT, 'test_js/1.0.0')}"
[[buildpacks]]
id = "test/python"
version = "1.0.0"
uri = "${join(DETECT, 'test_python/1.0.0')}"
[[order]]
[[order.group]]
id = "test/js"
[run]
[[run.images]]
image = "registry.example/run:jammy"
[build]
image = "registry.example/build:jammy"
[lifecycle]
version = "0.20.0"
`,
    );
    const scratch = join(tmp, 'scratch-toml');
    const b = await resolveBuilder('builder-src', { cwd: tmp, scratchDir: scratch });
    expect(b.runImages).toEqual(['registry.example/run:jammy']);
    expect(b.order.order).toEqual([{ group: [{ id: 'test/js', version: '1.0.0', optional: false }] }]);
    expect(await detectWith(b)).toEqual(['test/node', 'test/npm']);
    await b.cleanup();
    expect(await readdir(scratch)).toEqual([]);
  });
});
