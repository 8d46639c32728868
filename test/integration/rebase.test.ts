import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { main } from '../../src/cli/main.js';
import type { CliIO } from '../../src/cli/output.js';
import { runLifecycleCommand } from '../../src/cli/lifecycle.js';
import { publishIndex } from '../../src/image/publish-index.js';
import { readBaseImage } from '../../src/image/read.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { createRegistryStore } from '../../src/image/registry-store.js';
import type { ImageStore } from '../../src/image/store.js';
import type { Digest } from '../../src/oci/digest.js';
import { type Platform, parsePlatform } from '../../src/oci/platform.js';
import { parseReference } from '../../src/oci/reference.js';
import { exportImage } from '../../src/phase/export.js';
import type { RebaseResult } from '../../src/phase/rebase.js';
import { Label, LifecycleMetadataSchema } from '../../src/platform/labels.js';
import type { BuildMetadata } from '../../src/platform/metadata.js';
import { readReport } from '../../src/platform/report.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import {
  type PodmanRunner,
  type RunImage,
  createPodmanRunner,
  createVersionedRunImage,
} from '../helpers/run-image.js';

/**
 * Rebase against a real registry (behind the counting proxy): an app image exported onto busybox run image v1
 * is moved to v2 by `packfarm rebase` and `packfarm lifecycle rebaser`, alone and as a two-platform index, and
 * into an OCI layout. podman runs the results, skopeo and umoci read them, and the proxy's request log shows
 * that no app layer was downloaded.
 */
const AMD64 = parsePlatform('linux/amd64');
const ARM64 = parsePlatform('linux/arm64');
const group = { group: [{ id: 'example/app', version: '1.0.0', api: '0.10' }] };

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let host: string;
const runs: Record<string, RunImage> = {};

function store(repo: string): ImageStore {
  return createRegistryStore(parseReference(`${host}/${repo}`), { insecureRegistries: [host] });
}

function metadata(labels: BuildMetadata['labels'] = []): BuildMetadata {
  return {
    buildpacks: [{ id: 'example/app', version: '1.0.0', api: '0.10' }],
    extensions: [],
    processes: [],
    slices: [],
    labels,
    buildpackDefaultProcessType: undefined,
    bom: [],
  };
}

/** A small build output: one launch layer of a buildpack and an app dir, different per `name`. */
async function buildOutput(name: string): Promise<{ layers: string; app: string }> {
  const layers = join(root, name, 'layers');
  const app = join(root, name, 'workspace');
  await mkdir(join(layers, 'example_app', 'tools'), { recursive: true });
  await writeFile(join(layers, 'example_app', 'tools', 'tool.txt'), `tool ${name}\n`);
  await writeFile(join(layers, 'example_app', 'tools.toml'), '[types]\nlaunch = true\n');
  await mkdir(app, { recursive: true });
  await writeFile(join(app, 'app.txt'), `app ${name}\n`);
  return { layers, app };
}

/** Export an app image onto `run` (a store + target) and return the manifest digest and the app-layer digests. */
async function exportApp(opts: {
  name: string;
  run: { store: ImageStore; target: string; name: string };
  out: { store: ImageStore; tag: string };
  platform?: Platform;
  labels?: BuildMetadata['labels'];
}): Promise<{ digest: Digest; appBlobs: Digest[] }> {
  const { layers, app } = await buildOutput(opts.name);
  const r = await exportImage({
    layersDir: layers,
    appDir: app,
    group,
    metadata: metadata(opts.labels),
    runImage: opts.run,
    platform: opts.platform ?? AMD64,
    outputs: [{ store: opts.out.store, tags: [opts.out.tag] }],
  });
  return { digest: r.digest, appBlobs: r.layers.map((l) => l.digest) };
}

function capture(): { io: CliIO; out: string[]; err: string[] } {
  const out: string[] = [];
  const err: string[] = [];
  return { io: { out: (t) => void out.push(t), err: (t) => void err.push(t) }, out, err };
}

async function packfarm(...argv: string[]): Promise<{ code: number; out: string; err: string }> {
  const c = capture();
  const code = await main(argv, c.io);
  return { code, out: c.out.join('\n'), err: c.err.join('\n') };
}

async function rebaseJson(...argv: string[]): Promise<RebaseResult> {
  const r = await packfarm('rebase', ...argv, '--insecure-registry', host, '--json');
  if (r.code !== 0) throw new Error(`packfarm rebase failed (${r.code}):\n${r.err}\n${r.out}`);
  return JSON.parse(r.out) as RebaseResult;
}

/** Blob GETs the proxy saw since the last reset, by digest. */
function blobGets(): string[] {
  return registry.requests
    .filter((r) => r.kind === 'blob' && r.method === 'GET')
    .map((r) => r.path.split('/').pop() ?? '');
}

async function cat(image: string, flags: string[] = []): Promise<string> {
  const r = await podman.run(image, {
    entrypoint: '/bin/cat',
    args: ['/etc/run-image-version', '/workspace/app.txt'],
    flags,
  });
  expect(r.exitCode, r.stderr).toBe(0);
  return r.stdout;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-rebase-'));
  registry = await startRegistry();
  host = registry.host;
  podman = await createPodmanRunner();
  const run = store('run');
  const runIdx = store('run-multi');
  for (const v of [1, 2]) {
    runs[`v${v}`] = await createVersionedRunImage({ store: run, tag: `v${v}`, version: v });
    const children: Digest[] = [];
    for (const p of [AMD64, ARM64]) {
      const img = await createVersionedRunImage({
        store: runIdx,
        tag: `v${v}-${p.architecture}`,
        platform: p,
        version: v,
      });
      runs[`v${v}-${p.architecture}`] = img;
      children.push(img.digest);
    }
    await publishIndex({ store: runIdx, images: children, tags: [`v${v}`] });
  }
  // An arm64-only run image in the single-image repository, for the refused mismatch.
  runs['v2-arm-only'] = await createVersionedRunImage({
    store: run,
    tag: 'v2-arm64',
    platform: ARM64,
    version: 2,
  });
});

afterAll(async () => {
  await podman?.cleanup();
  await registry?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('packfarm rebase in a registry', () => {
  it('moves a single image from run v1 to v2 without downloading an app layer', async () => {
    const app = store('app');
    const exported = await exportApp({
      name: 'single',
      run: { store: store('run'), target: 'v1', name: `${host}/run:v1` },
      out: { store: app, tag: 'latest' },
    });
    expect(await cat(`${host}/app:latest`)).toBe('1\napp single');

    registry.resetCounters();
    const r = await rebaseJson(`${host}/app:latest`, '--run-image', `${host}/run:v2`, '--publish');
    const c = registry.counters();
    // Manifest + config edits only: the run layer is mounted, the app layers never leave the registry.
    const gets = blobGets();
    for (const d of exported.appBlobs) expect(gets).not.toContain(d);
    const appImage = await readBaseImage(app, exported.digest);
    expect(gets.sort()).toEqual([appImage.manifest.config.digest, runs.v2!.config.digest].sort());
    expect(c.mounts).toBe(1);
    expect(c.blobUploads).toBe(1); // the new config
    expect(c.bytesUploaded).toBeLessThan(64 * 1024);

    expect(r.kind).toBe('image');
    expect(r.images[0]?.previousDigest).toBe(exported.digest);
    expect(r.images[0]?.blobs).toEqual({ exists: 0, mounted: 1, uploaded: 0 });
    const rebased = await readBaseImage(app, 'latest');
    expect(rebased.digest).toBe(r.digest);
    expect(rebased.manifest.layers[0]?.digest).toBe(runs.v2!.layers[0]?.digest);
    expect(rebased.manifest.layers.slice(1)).toEqual(appImage.manifest.layers.slice(1));
    const md = LifecycleMetadataSchema.parse(
      JSON.parse(rebased.config.config?.Labels?.[Label.lifecycleMetadata] ?? '{}'),
    );
    expect(md.runImage.topLayer).toBe(runs.v2!.layers[0]?.diffId);
    expect(md.runImage.reference).toBe(`${host}/run@${runs.v2!.digest}`);
    expect(md.runImage.image).toBe(`${host}/run:v2`);

    expect(await cat(`${host}/app:latest`)).toBe('2\napp single');
    const inspect = await execa('skopeo', ['inspect', '--tls-verify=false', `docker://${host}/app:latest`]);
    expect((JSON.parse(inspect.stdout) as { Digest: string }).Digest).toBe(r.digest);
    const layout = join(root, 'skopeo-single');
    await execa('skopeo', [
      'copy',
      '--src-tls-verify=false',
      `docker://${host}/app:latest`,
      `oci:${layout}:app`,
    ]);
    const bundle = join(root, 'bundle-single');
    await execa('umoci', ['unpack', '--rootless', '--image', `${layout}:app`, bundle]);
    expect(await readFile(join(bundle, 'rootfs', 'etc', 'run-image-version'), 'utf8')).toBe('2\n');
    expect(await readFile(join(bundle, 'rootfs', 'workspace', 'app.txt'), 'utf8')).toBe('app single\n');
  });

  it('rebases each platform of an index and writes the index tag last', async () => {
    const repo = store('app-multi');
    const children: Digest[] = [];
    const appBlobs: Digest[] = [];
    for (const p of [AMD64, ARM64]) {
      const e = await exportApp({
        name: `multi-${p.architecture}`,
        run: { store: store('run-multi'), target: 'v1', name: `${host}/run-multi:v1` },
        out: { store: repo, tag: p.architecture },
        platform: p,
      });
      appBlobs.push(...e.appBlobs);
      children.push(e.digest);
    }
    await publishIndex({ store: repo, images: children, tags: ['latest'] });
    expect(await cat(`${host}/app-multi:latest`, ['--platform', 'linux/amd64'])).toBe('1\napp multi-amd64');

    registry.resetCounters();
    const r = await rebaseJson(
      `${host}/app-multi:latest`,
      '--run-image',
      `${host}/run-multi:v2`,
      '--publish',
    );
    const gets = blobGets();
    for (const d of appBlobs) expect(gets).not.toContain(d);
    expect(registry.counters().blobUploads).toBe(2); // one config per platform
    expect(r.kind).toBe('index');
    expect(r.images.map((i) => i.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    // Children by digest first, the tag last.
    const puts = registry.requests
      .filter((q) => q.kind === 'manifest' && q.method === 'PUT')
      .map((q) => q.path);
    expect(puts).toHaveLength(3);
    expect(puts.slice(0, 2).every((p) => p.includes('/manifests/sha256:'))).toBe(true);
    expect(puts[2]).toMatch(/\/manifests\/latest$/);

    for (const p of [AMD64, ARM64]) {
      const img = await readBaseImage(repo, 'latest', p);
      const run = runs[`v2-${p.architecture}`]!;
      expect(img.manifest.layers[0]?.digest).toBe(run.layers[0]?.digest);
      const md = LifecycleMetadataSchema.parse(
        JSON.parse(img.config.config?.Labels?.[Label.lifecycleMetadata] ?? '{}'),
      );
      expect(md.runImage.reference).toBe(`${host}/run-multi@${run.digest}`);
      expect(img.platform.architecture).toBe(p.architecture);
    }
    expect(await cat(`${host}/app-multi:latest`, ['--platform', 'linux/amd64'])).toBe('2\napp multi-amd64');
    const raw = await execa('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${host}/app-multi:latest`,
    ]);
    expect((JSON.parse(raw.stdout) as { manifests: unknown[] }).manifests).toHaveLength(2);
  });

  it('refuses another architecture and rebasable=false without --force, and leaves the tag alone', async () => {
    const app = store('app-refuse');
    const e = await exportApp({
      name: 'refuse',
      run: { store: store('run'), target: 'v1', name: `${host}/run:v1` },
      out: { store: app, tag: 'latest' },
    });
    const arch = await packfarm(
      'rebase',
      `${host}/app-refuse:latest`,
      '--run-image',
      `${host}/run:v2-arm64`,
      '--publish',
      '--insecure-registry',
      host,
    );
    expect(arch.code).toBe(72);
    expect(arch.err).toMatch(/linux\/arm64/);
    expect((await app.resolve('latest'))?.digest).toBe(e.digest);

    const pinned = store('app-pinned');
    const p = await exportApp({
      name: 'pinned',
      run: { store: store('run'), target: 'v1', name: `${host}/run:v1` },
      out: { store: pinned, tag: 'latest' },
      labels: [{ key: Label.rebasable, value: 'false' }],
    });
    const args = [
      `${host}/app-pinned:latest`,
      '--run-image',
      `${host}/run:v2`,
      '--publish',
      '--insecure-registry',
      host,
    ];
    const refused = await packfarm('rebase', ...args);
    expect(refused.code).toBe(72);
    expect(refused.err).toMatch(/io\.buildpacks\.rebasable=false/);
    expect((await pinned.resolve('latest'))?.digest).toBe(p.digest);
    const forced = await packfarm('rebase', ...args, '--force');
    expect(forced.code, forced.err).toBe(0);
    expect((await pinned.resolve('latest'))?.digest).not.toBe(p.digest);
    expect(await cat(`${host}/app-pinned:latest`)).toBe('2\napp pinned');
  });

  it('finds the new run image from the label when --run-image is left out', async () => {
    const app = store('app-label');
    await exportApp({
      name: 'label',
      run: { store: store('run'), target: 'v1', name: `${host}/run:v1` },
      out: { store: app, tag: 'latest' },
    });
    // Move the recorded tag to v2, as a run image publisher does.
    const v2 = await store('run').getManifest('v2');
    await store('run').putManifest({ bytes: v2.bytes, mediaType: v2.mediaType, tag: 'v1' });
    try {
      const r = await rebaseJson(`${host}/app-label:latest`, '--publish');
      expect(r.images[0]?.runImage.reference).toBe(`${host}/run@${runs.v2!.digest}`);
      expect(r.images[0]?.runImage.image).toBe(`${host}/run:v1`);
    } finally {
      const v1 = runs.v1!;
      await store('run').putManifest({ bytes: v1.manifestBytes, mediaType: v1.mediaType, tag: 'v1' });
    }
    expect(await cat(`${host}/app-label:latest`)).toBe('2\napp label');
  });
});

describe('packfarm rebase in an OCI layout', () => {
  it('rebases a layout image onto a registry run image; podman, skopeo and umoci read it', async () => {
    const dir = join(root, 'layout-app');
    const layout = await openLayoutStore(dir, { create: true });
    const e = await exportApp({
      name: 'layout',
      run: { store: store('run'), target: 'v1', name: `${host}/run:v1` },
      out: { store: layout, tag: 'app' },
    });
    registry.resetCounters();
    const r = await rebaseJson(`oci:${dir}:app`, '--run-image', `${host}/run:v2`);
    expect(r.images[0]?.previousDigest).toBe(e.digest);
    // The new run layer is carried into the layout; nothing of the app is read from the registry.
    expect(r.images[0]?.blobs.uploaded).toBe(1);
    expect(blobGets().sort()).toEqual([runs.v2!.config.digest, runs.v2!.layers[0]!.digest].sort());

    expect(await cat(`oci:${dir}:app`)).toBe('2\napp layout');
    const inspect = await execa('skopeo', ['inspect', `oci:${dir}:app`]);
    expect((JSON.parse(inspect.stdout) as { Digest: string }).Digest).toBe(r.digest);
    const bundle = join(root, 'bundle-layout');
    await execa('umoci', ['unpack', '--rootless', '--image', `${dir}:app`, bundle]);
    expect(await readFile(join(bundle, 'rootfs', 'etc', 'run-image-version'), 'utf8')).toBe('2\n');
  });

  it('reads a bare reference without --publish from the default local layout', async () => {
    const saved = process.env.PACKFARM_HOME;
    process.env.PACKFARM_HOME = join(root, 'home');
    try {
      const dir = join(root, 'home', 'images', 'example.test', 'team', 'app');
      const layout = await openLayoutStore(dir, { create: true });
      await exportApp({
        name: 'bare',
        run: { store: store('run'), target: 'v1', name: `${host}/run:v1` },
        out: { store: layout, tag: 'dev' },
      });
      const r = await rebaseJson('example.test/team/app:dev', '--run-image', `${host}/run:v2`);
      expect((await layout.resolve('dev'))?.digest).toBe(r.digest);
      expect(await cat(`oci:${dir}:dev`)).toBe('2\napp bare');
    } finally {
      if (saved === undefined) delete process.env.PACKFARM_HOME;
      else process.env.PACKFARM_HOME = saved;
    }
  });
});

describe('packfarm lifecycle rebaser', () => {
  const env = (extra: Record<string, string> = {}) => ({ CNB_PLATFORM_API: '0.13', ...extra });
  async function rebaser(args: string[], extra: Record<string, string> = {}) {
    const c = capture();
    const code = await runLifecycleCommand(['rebaser', ...args], c.io, env(extra));
    return { code, out: c.out.join('\n'), err: c.err.join('\n') };
  }

  it('rebases onto -run-image, tags every name and writes report.toml', async () => {
    const app = store('lc-app');
    await exportApp({
      name: 'lc',
      run: { store: store('run'), target: 'v1', name: `${host}/run:v1` },
      out: { store: app, tag: 'latest' },
    });
    const report = join(root, 'lc-report.toml');
    const r = await rebaser(
      [
        '-run-image',
        `${host}/run:v2`,
        '-report',
        report,
        `${host}/lc-app:latest`,
        `${host}/lc-app:extra`,
        `${host}/lc-other:v1`,
      ],
      { CNB_INSECURE_REGISTRIES: host },
    );
    expect(r.code, r.err).toBe(0);
    const rep = await readReport(report);
    expect(rep.image.tags).toEqual([`${host}/lc-app:latest`, `${host}/lc-app:extra`, `${host}/lc-other:v1`]);
    expect((await app.resolve('latest'))?.digest).toBe(rep.image.digest);
    expect((await app.resolve('extra'))?.digest).toBe(rep.image.digest);
    expect((await store('lc-other').resolve('v1'))?.digest).toBe(rep.image.digest);
    expect(rep.image.manifestSize).toBe((await app.getManifest('latest')).bytes.length);
    expect(await cat(`${host}/lc-other:v1`)).toBe('2\napp lc');
  });

  it('reads -previous-image, refuses a foreign arch with 72 and -daemon with 3', async () => {
    const app = store('lc-prev');
    const e = await exportApp({
      name: 'lc-prev',
      run: { store: store('run'), target: 'v1', name: `${host}/run:v1` },
      out: { store: app, tag: 'src' },
    });
    const report = join(root, 'lc-prev-report.toml');
    const refused = await rebaser(
      [
        '-run-image',
        `${host}/run:v2-arm64`,
        '-previous-image',
        `${host}/lc-prev:src`,
        '-report',
        report,
        `${host}/lc-prev:out`,
      ],
      { CNB_INSECURE_REGISTRIES: host },
    );
    expect(refused.code).toBe(72);
    expect(await app.resolve('out')).toBeUndefined();
    const ok = await rebaser(
      [
        '-run-image',
        `${host}/run:v2`,
        '-previous-image',
        `${host}/lc-prev:src`,
        '-report',
        report,
        `${host}/lc-prev:out`,
      ],
      { CNB_INSECURE_REGISTRIES: host },
    );
    expect(ok.code, ok.err).toBe(0);
    expect((await app.resolve('src'))?.digest).toBe(e.digest);
    expect((await readReport(report)).image.digest).toBe((await app.resolve('out'))?.digest);
    const daemon = await rebaser(['-daemon', `${host}/lc-prev:out`]);
    expect(daemon.code).toBe(3);
  });

  it('rebases with -layout under -layout-dir', async () => {
    const layoutDir = join(root, 'lc-layouts');
    // Every name has its own layout dir <layout-dir>/<registry>/<repository>/<tag>, as in the other phases.
    const dir = join(layoutDir, 'example.test', 'lc', 'app', 'latest');
    const layout = await openLayoutStore(dir, { create: true });
    const run1 = await openLayoutStore(join(layoutDir, 'example.test', 'lc', 'run', 'v1'), { create: true });
    const run = await openLayoutStore(join(layoutDir, 'example.test', 'lc', 'run', 'v2'), { create: true });
    await createVersionedRunImage({ store: run1, tag: 'v1', version: 1 });
    await createVersionedRunImage({ store: run, tag: 'v2', version: 2 });
    await exportApp({
      name: 'lc-layout',
      run: { store: run1, target: 'v1', name: 'example.test/lc/run:v1' },
      out: { store: layout, tag: 'latest' },
    });
    const report = join(root, 'lc-layout-report.toml');
    const r = await rebaser(
      [
        '-layout',
        '-layout-dir',
        layoutDir,
        '-run-image',
        'example.test/lc/run:v2',
        '-report',
        report,
        'example.test/lc/app',
      ],
      { CNB_EXPERIMENTAL_MODE: 'warn' },
    );
    expect(r.code, r.err).toBe(0);
    expect((await readReport(report)).image.digest).toBe((await layout.resolve('latest'))?.digest);
    expect(await cat(`oci:${dir}:latest`)).toBe('2\napp lc-layout');
  });
});
