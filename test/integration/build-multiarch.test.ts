import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildReport } from '../../src/api/build.js';
import { writeLayer } from '../../src/archive/index.js';
import { publishIndex } from '../../src/image/publish-index.js';
import type { ImageStore } from '../../src/image/store.js';
import { type Digest, sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import type { Platform } from '../../src/oci/platform.js';
import { canonicalJson } from '../../src/util/json.js';
import { registryStore, runCli, usePackfarmHome } from '../helpers/cli.js';
import { writeBusyboxBuildImage } from '../helpers/build-image.js';
import { busyboxFor } from '../helpers/debian-packages.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner, createRunImage } from '../helpers/run-image.js';

/**
 * Multi-arch for real: `packfarm build --platform linux/amd64,linux/arm64,linux/s390x` with a builder image
 * index and a run image index made here from Debian's busybox-static of each architecture. Buildpacks run in
 * each target's build image through runc (the oci executor); arm64 and s390x binaries run through the
 * kernel's qemu binfmt_misc handlers (registered by the test setup). podman then runs each architecture.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const archBp = join(
  repoRoot,
  'test',
  'fixtures',
  'buildpacks',
  'multiarch',
  'multiarch_arch-report',
  '1.0.0',
);
const PLATFORMS: Platform[] = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
  { os: 'linux', architecture: 's390x' },
];
const ALL = 'linux/amd64,linux/arm64,linux/s390x';
const MACHINE: Record<string, string> = { amd64: 'x86_64', arm64: 'aarch64', s390x: 's390x' };

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let builderRef: string;
let restoreHome: (() => void) | undefined;

function store(repo: string): ImageStore {
  return registryStore(registry, `${repo}`);
}

/**
 * A builder image for one platform: the busybox build image of that architecture (CNB_USER_ID 1000) plus a
 * layer holding /cnb/order.toml and /cnb/buildpacks/, and pack's builder label naming the run image.
 */
async function writeBuilderImage(
  s: ImageStore,
  platform: Platform,
  runRef: string,
  cnbLayer: {
    digest: string;
    diffId: string;
    size: number;
    gz: Buffer;
  },
) {
  const base = await writeBusyboxBuildImage({ store: s, tag: `build-${platform.architecture}`, platform });
  const cfg = base.config.value as {
    config: { Labels: Record<string, string> };
    rootfs: { diff_ids: string[] };
  };
  const config = {
    ...cfg,
    config: {
      ...cfg.config,
      Labels: {
        ...cfg.config.Labels,
        'io.buildpacks.builder.metadata': JSON.stringify({ images: [{ image: runRef }] }),
      },
    },
    rootfs: { type: 'layers', diff_ids: [...cfg.rootfs.diff_ids, cnbLayer.diffId] },
  };
  const cfgBytes = Buffer.from(canonicalJson(config));
  const cfgDigest = sha256Digest(cfgBytes);
  await s.putBlob({ digest: cfgDigest, size: cfgBytes.length, open: () => Readable.from([cfgBytes]) });
  await s.putBlob({
    digest: cnbLayer.digest as `sha256:${string}`,
    size: cnbLayer.size,
    open: () => Readable.from([cnbLayer.gz]),
  });
  const manifest = Buffer.from(
    canonicalJson({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: cfgDigest, size: cfgBytes.length },
      layers: [
        ...base.layers.map((l) => ({ mediaType: MediaType.ociLayerGzip, digest: l.digest, size: l.size })),
        { mediaType: MediaType.ociLayerGzip, digest: cnbLayer.digest, size: cnbLayer.size },
      ],
    }),
  );
  return {
    builder: await s.putManifest({ bytes: manifest, mediaType: MediaType.ociManifest }),
    build: base.digest,
  };
}

const publish = (image: string, app: string, ...extra: string[]) =>
  runCli(
    'build',
    image,
    '--path',
    app,
    '--builder',
    builderRef,
    '--insecure-registry',
    registry.host,
    '--publish',
    ...extra,
  );

async function publishJson(image: string, app: string, ...extra: string[]): Promise<BuildReport> {
  const r = await publish(image, app, ...extra, '--json');
  if (r.code !== 0) throw new Error(`packfarm build failed (${r.code}):\n${r.err}\n${r.out}`);
  return JSON.parse(r.out) as BuildReport;
}

async function makeApp(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, 'apps', name);
  await mkdir(dir, { recursive: true });
  for (const [rel, text] of Object.entries(files)) await writeFile(join(dir, rel), text);
  return dir;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-multiarch-'));
  restoreHome = usePackfarmHome(join(root, 'home'));
  registry = await startRegistry();
  podman = await createPodmanRunner();

  // Run image index: busybox of each architecture.
  const run = store('run');
  const runImages = [];
  for (const p of PLATFORMS)
    runImages.push(
      await createRunImage({
        store: run,
        tag: `1-${p.architecture}`,
        platform: p,
        busyboxPath: await busyboxFor(p.architecture),
      }),
    );
  await publishIndex({ store: run, images: runImages.map((i) => i.digest), tags: ['1'] });
  const runRef = `${registry.host}/run:1`;

  // Builder image index: one /cnb layer (the same for every architecture: the buildpack is a shell script).
  const tree = join(root, 'builder-tree');
  await mkdir(join(tree, 'cnb', 'buildpacks', 'multiarch_arch-report'), { recursive: true });
  await cp(archBp, join(tree, 'cnb', 'buildpacks', 'multiarch_arch-report', '1.0.0'), { recursive: true });
  await writeFile(
    join(tree, 'cnb', 'order.toml'),
    '[[order]]\n[[order.group]]\nid = "multiarch/arch-report"\nversion = "1.0.0"\n',
  );
  const layerFile = join(root, 'cnb-layer.tar.gz');
  const layer = await writeLayer({ dir: tree, out: layerFile });
  const cnbLayer = { ...layer, gz: await readFile(layerFile) };
  const builder = store('builder');
  const builders: Digest[] = [];
  const builds: Digest[] = [];
  for (const p of PLATFORMS) {
    const written = await writeBuilderImage(builder, p, runRef, cnbLayer);
    builders.push(written.builder);
    builds.push(written.build);
  }
  await publishIndex({ store: builder, images: builders, tags: ['1'] });
  // The build images alone, as an index: for a build without a builder (--build-image).
  await publishIndex({ store: builder, images: builds, tags: ['build-1'] });
  builderRef = `${registry.host}/builder:1`;
}, 600_000);

afterAll(async () => {
  restoreHome?.();
  await podman?.cleanup();
  await registry?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('packfarm build --platform amd64,arm64,s390x (oci executor, emulated foreign targets)', () => {
  const image = () => `${registry.host}/app:latest`;
  let app: string;
  let first: BuildReport;

  it('runs each target in its build image and publishes one sorted index that podman runs per arch', async () => {
    app = await makeApp('app', { 'app.txt': 'one\n' });
    process.env.PACKFARM_CANARY = 'canary-value';
    process.env.CNB_REGISTRY_AUTH = JSON.stringify({ [registry.host]: 'Basic c2VjcmV0OnNlY3JldA==' });
    try {
      first = await publishJson(image(), app, '--platform', ALL, '--jobs', '3');
    } finally {
      delete process.env.PACKFARM_CANARY;
      delete process.env.CNB_REGISTRY_AUTH;
    }
    expect(first.index).toBe(true);
    expect(first.targets.map((t) => [t.platform, t.runs, t.executor])).toEqual([
      ['linux/amd64', 'native', 'oci'],
      ['linux/arm64', 'emulated', 'oci'],
      ['linux/s390x', 'emulated', 'oci'],
    ]);

    const raw = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${image()}`]);
    const index = JSON.parse(raw.stdout) as {
      manifests: Array<{ digest: string; platform: { os: string; architecture: string } }>;
    };
    expect(index.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`)).toEqual([
      'linux/amd64',
      'linux/arm64',
      'linux/s390x',
    ]);

    for (const p of PLATFORMS) {
      const arch = p.architecture;
      const r = await podman.run(image(), { flags: ['--arch', arch] });
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain(`build uname=${MACHINE[arch]} CNB_TARGET_OS=linux CNB_TARGET_ARCH=${arch} `);
      expect(r.stdout).toContain(`run uname=${MACHINE[arch]}`);
      const files = await podman.run(image(), {
        flags: ['--arch', arch],
        entrypoint: '/bin/ls',
        args: ['-ln', '/layers/multiarch_arch-report/report'],
      });
      // Owned by the build image's CNB user (1000), as under pack.
      expect(files.stdout).toMatch(/^-\S+\s+\d+\s+1000\s+1000\s.*arch\.txt$/m);
      const env = await podman.run(image(), {
        flags: ['--arch', arch],
        entrypoint: '/bin/cat',
        args: ['/layers/multiarch_arch-report/report/build-env.txt'],
      });
      expect(env.stdout).toMatch(/^CNB_TARGET_ARCH$/m);
      expect(env.stdout).not.toMatch(/PACKFARM_CANARY|CNB_REGISTRY_AUTH/);
    }
  }, 900_000);

  it('rebuilds with no change without uploading a blob or writing a manifest (targets: the builder index)', async () => {
    registry.resetCounters();
    // No --platform: the builder index's platforms, all of which this machine runs (two emulated).
    const again = await publishJson(image(), app);
    expect(again.targets.map((t) => t.platform)).toEqual(['linux/amd64', 'linux/arm64', 'linux/s390x']);
    expect(again.digest).toBe(first.digest);
    const c = registry.counters();
    expect(c.blobUploads).toBe(0);
    expect(c.manifestPuts).toBe(0);
  }, 900_000);

  it('gives the same index digest with --jobs 1 as with --jobs 3', async () => {
    const one = await publishJson(`${registry.host}/app-jobs1:latest`, app, '--platform', ALL, '--jobs', '1');
    expect(one.digest).toBe(first.digest);
  }, 900_000);

  it('--build-image with --buildpack and --run-image, no builder: one emulated target gives a plain image', async () => {
    const out = `${registry.host}/app-build-image:latest`;
    const r = await runCli(
      'build',
      out,
      '--path',
      app,
      '--build-image',
      `${registry.host}/builder:build-1`,
      '--buildpack',
      archBp,
      '--run-image',
      `${registry.host}/run:1`,
      '--insecure-registry',
      registry.host,
      '--publish',
      '--platform',
      'linux/arm64',
      '--json',
    );
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out) as BuildReport;
    expect(report.index).toBe(false);
    expect(report.targets.map((t) => [t.platform, t.runs, t.executor])).toEqual([
      ['linux/arm64', 'emulated', 'oci'],
    ]);
    expect((await store('app-build-image').resolve('latest'))?.mediaType).toBe(MediaType.ociManifest);
    const ran = await podman.run(out, { flags: ['--arch', 'arm64'] });
    expect(ran.stdout).toContain('build uname=aarch64 CNB_TARGET_OS=linux CNB_TARGET_ARCH=arm64 ');
  }, 900_000);

  it('a buildpack failing on arm64 only: no tag, the error names linux/arm64', async () => {
    const failing = await makeApp('fails-on-arm64', { 'app.txt': 'two\n', 'fail-on': 'arm64\n' });
    const r = await publish(`${registry.host}/app-fail:latest`, failing, '--platform', ALL);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/target linux\/arm64 failed in build: .*no tag was written/);
    expect(await store('app-fail').resolve('latest')).toBeUndefined();
  }, 900_000);

  it('an oci: output: skopeo copy --all reads it, and podman runs each arch from the copy', async () => {
    const dir = join(root, 'layout-out');
    const r = await runCli(
      'build',
      `oci:${dir}:app`,
      '--path',
      app,
      '--builder',
      builderRef,
      '--insecure-registry',
      registry.host,
      '--platform',
      ALL,
      '--json',
    );
    expect(r.code).toBe(0);
    expect((JSON.parse(r.out) as BuildReport).digest).toBe(first.digest);
    const copied = `${registry.host}/from-layout:1`;
    await execa('skopeo', [
      'copy',
      '--all',
      '--dest-tls-verify=false',
      `oci:${dir}:app`,
      `docker://${copied}`,
    ]);
    for (const p of PLATFORMS) {
      const ran = await podman.run(copied, { flags: ['--arch', p.architecture] });
      expect(ran.stdout).toContain(`CNB_TARGET_ARCH=${p.architecture} `);
    }
  }, 900_000);
});
