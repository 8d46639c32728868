import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildEvent } from '../../src/api/events.js';
import type { BuildReport } from '../../src/api/build.js';
import { build } from '../../src/api/build.js';
import { planBuild } from '../../src/api/plan.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { publishIndex } from '../../src/image/publish-index.js';
import type { ImageStore } from '../../src/image/store.js';
import { MediaType } from '../../src/oci/media-types.js';
import { formatPlatform, type Platform } from '../../src/oci/platform.js';
import { isPackfarmError } from '../../src/util/errors.js';
import { registryStore, runCli, usePackfarmHome, writeFiles } from '../helpers/cli.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner, createRunImage } from '../helpers/run-image.js';

/**
 * Several targets in one `packfarm build`, on the host executor: linux/amd64 and linux/386 are the two
 * platforms an amd64 machine runs natively, so both targets really run here (foreign architectures run in
 * their build image through the oci executor: build-multiarch.test.ts). The 386 run image holds the
 * machine's static busybox (what podman starts does not matter to the index mechanics checked here).
 *
 * What is checked: one index with children sorted by platform and each child's platform taken from its
 * config; per-target images untagged; CNB_TARGET_ARCH per target; a no-change rebuild uploads nothing and
 * writes no manifest; --jobs does not change the index digest; a failing target leaves no tag and the error
 * names it and the phase; planning errors come before anything runs; events carry target and phase; oci:
 * output; inspect and rebase on the index.
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
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };
const I386: Platform = { os: 'linux', architecture: '386' };

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let runIndex: string;
let runAmd64Only: string;
let restoreHome: (() => void) | undefined;

async function buildJson(...argv: string[]): Promise<BuildReport> {
  const r = await runCli('build', ...argv, '--json');
  if (r.code !== 0) throw new Error(`packfarm build failed (${r.code}):\n${r.err}\n${r.out}`);
  return JSON.parse(r.out) as BuildReport;
}

const store = (repo: string): ImageStore => registryStore(registry, repo);

const makeApp = (name: string, files: Record<string, string>) => writeFiles(join(root, 'apps', name), files);

const both = 'linux/amd64,linux/386';
const publish = (image: string, app: string, ...extra: string[]) =>
  buildJson(
    image,
    '--path',
    app,
    '--buildpack',
    archBp,
    '--run-image',
    runIndex,
    '--insecure-registry',
    registry.host,
    '--publish',
    ...extra,
  );

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-multitarget-'));
  restoreHome = usePackfarmHome(join(root, 'home'));
  registry = await startRegistry();
  podman = await createPodmanRunner();
  const run = store('run');
  const images = [];
  for (const p of [AMD64, I386])
    images.push(await createRunImage({ store: run, tag: `v1-${p.architecture}`, platform: p }));
  const published = await publishIndex({ store: run, images: images.map((i) => i.digest), tags: ['v1'] });
  expect(published.written).toEqual(['v1']);
  runIndex = `${registry.host}/run:v1`;
  runAmd64Only = `${registry.host}/run:v1-amd64`;
}, 120_000);

afterAll(async () => {
  restoreHome?.();
  await podman?.cleanup();
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('packfarm build with several targets (host executor)', () => {
  const image = () => `${registry.host}/app:latest`;
  let app: string;
  let first: BuildReport;

  it('publishes one index: children sorted by platform, per-target images untagged, CNB_TARGET_ARCH per target', async () => {
    app = await makeApp('app', { 'app.txt': 'one\n' });
    process.env.PACKFARM_TEST_CANARY = 'canary-value';
    try {
      first = await publish(image(), app, '--platform', both, '--cache-dir', join(root, 'cache'));
    } finally {
      delete process.env.PACKFARM_TEST_CANARY;
    }
    expect(first.index).toBe(true);
    expect(first.mediaType).toBe(MediaType.ociIndex);
    expect(first.targets.map((t) => [t.platform, t.runs, t.executor])).toEqual([
      ['linux/386', 'native', 'host'],
      ['linux/amd64', 'native', 'host'],
    ]);
    for (const t of first.targets) {
      expect(t.tags).toEqual([]);
      expect(t.layerCounts.added).toBeGreaterThan(0);
      expect(t.size).toBeGreaterThan(t.manifestSize);
      expect(typeof t.timings.build).toBe('number');
    }

    const raw = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${image()}`]);
    const index = JSON.parse(raw.stdout) as {
      mediaType: string;
      manifests: Array<{ digest: string; platform: { os: string; architecture: string } }>;
    };
    expect(index.mediaType).toBe(MediaType.ociIndex);
    expect(index.manifests.map((m) => `${m.platform.os}/${m.platform.architecture}`)).toEqual([
      'linux/386',
      'linux/amd64',
    ]);
    expect(index.manifests.map((m) => m.digest)).toEqual(first.targets.map((t) => t.digest));
    // Only the index is tagged.
    expect((await store('app').listTags()).sort()).toEqual(['latest']);

    for (const [arch, want] of [
      ['386', '386'],
      ['amd64', 'amd64'],
    ]) {
      const r = await podman.run(image(), { flags: ['--arch', arch!] });
      expect(r.stderr).toBe('');
      expect(r.stdout).toContain(`CNB_TARGET_OS=linux CNB_TARGET_ARCH=${want} `);
      expect(r.stdout).toContain('app=one');
      // The host executor runs both on this machine: 386 code runs natively on amd64.
      expect(r.stdout).toContain('build uname=x86_64');
      const env = await podman.run(image(), {
        flags: ['--arch', arch!],
        entrypoint: '/bin/cat',
        args: ['/layers/multiarch_arch-report/report/build-env.txt'],
      });
      expect(env.stdout).toMatch(/^CNB_TARGET_ARCH$/m);
      expect(env.stdout).not.toContain('canary-value');
      expect(env.stdout).not.toMatch(/CNB_REGISTRY_AUTH|PACKFARM_TEST_CANARY/);
    }
  }, 240_000);

  it('rebuilds with no change: no blob uploaded, no manifest written, same index digest', async () => {
    registry.resetCounters();
    const again = await publish(image(), app, '--platform', both, '--cache-dir', join(root, 'cache'));
    expect(again.digest).toBe(first.digest);
    for (const t of again.targets) expect(t.layerCounts.added).toBe(0);
    const c = registry.counters();
    expect(c.blobUploads).toBe(0);
    expect(c.manifestPuts).toBe(0);
  }, 180_000);

  it('gives the same index digest with --jobs 1 in the other platform order', async () => {
    const other = `${registry.host}/app-jobs:latest`;
    const one = await publish(
      other,
      app,
      '--platform',
      'linux/386',
      '--platform',
      'linux/amd64',
      '--jobs',
      '1',
    );
    expect(one.digest).toBe(first.digest);
  }, 180_000);

  it('a target that fails: no tag, and the error names the target and the phase', async () => {
    const failing = await makeApp('fails-on-386', { 'app.txt': 'two\n', 'fail-on': '386\n' });
    const r = await runCli(
      'build',
      `${registry.host}/app-fail:latest`,
      '--path',
      failing,
      '--buildpack',
      archBp,
      '--run-image',
      runIndex,
      '--insecure-registry',
      registry.host,
      '--publish',
      '--platform',
      both,
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/target linux\/386 failed in build: .*no tag was written/);
    expect(r.out).toContain('[linux/386] arch-report: refusing to build for 386');
    expect(await store('app-fail').resolve('latest')).toBeUndefined();
  }, 180_000);

  it('keeps a cache image per target', async () => {
    const r = await publish(
      `${registry.host}/app-cached:latest`,
      app,
      '--platform',
      both,
      '--cache-image',
      `${registry.host}/cache:app`,
    );
    expect(r.index).toBe(true);
    expect((await store('cache').listTags()).sort()).toEqual(['app-linux-386', 'app-linux-amd64']);
    for (const t of r.targets) expect(t.cache?.location).toBe(`${registry.host}/cache:app`);
  }, 120_000);

  it('--report-output-dir gets a subdirectory per target', async () => {
    const out = join(root, 'outputs');
    await publish(`${registry.host}/app-outputs:latest`, app, '--platform', both, '--report-output-dir', out);
    expect((await readdir(out)).sort()).toEqual(['linux-386', 'linux-amd64']);
    for (const t of ['linux-386', 'linux-amd64'])
      expect(await readdir(join(out, t))).toEqual(['report.toml']);
  }, 120_000);

  it('the first target to fail cancels the others', async () => {
    // amd64 waits (for minutes) in bin/build while 386 fails at once: amd64 must be stopped, not awaited.
    const app2 = await makeApp('cancel', { 'app.txt': 'three\n', 'fail-on': '386\n', 'sleep-on': 'amd64\n' });
    const events: BuildEvent[] = [];
    const err = await build(
      {
        image: `${registry.host}/app-cancel:latest`,
        path: app2,
        buildpacks: [archBp],
        runImage: runIndex,
        insecureRegistries: [registry.host],
        publish: true,
        platforms: [both],
        jobs: 2,
      },
      { onEvent: (e) => events.push(e) },
    ).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/^target linux\/386 failed in build: /);
    expect(events).toContainEqual(expect.objectContaining({ type: 'target-failed', target: 'linux/amd64' }));
    expect(events.filter((e) => e.type === 'target-end')).toEqual([]);
    expect(await store('app-cancel').resolve('latest')).toBeUndefined();
  }, 120_000);

  it('plain output prefixes each line with its target; --events prints JSON lines with target and phase', async () => {
    const r = await runCli(
      'build',
      `${registry.host}/app-lines:latest`,
      '--path',
      app,
      '--buildpack',
      archBp,
      '--run-image',
      runIndex,
      '--insecure-registry',
      registry.host,
      '--publish',
      '--platform',
      both,
    );
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/^\[linux\/386\] ===> BUILD$/m);
    expect(r.out).toMatch(/^\[linux\/amd64\] ===> EXPORT$/m);
    expect(r.out).toContain('Successfully built image index');

    const j = await runCli(
      'build',
      `${registry.host}/app-lines:latest`,
      '--path',
      app,
      '--buildpack',
      archBp,
      '--run-image',
      runIndex,
      '--insecure-registry',
      registry.host,
      '--publish',
      '--platform',
      both,
      '--json',
      '--events',
    );
    expect(j.code).toBe(0);
    const events = j.err
      .trimEnd()
      .split('\n')
      .map((l) => JSON.parse(l) as BuildEvent);
    const starts = events.filter((e) => e.type === 'phase-start').map((e) => `${e.target} ${e.phase}`);
    for (const t of ['linux/386', 'linux/amd64'])
      for (const p of ['analyze', 'detect', 'restore', 'build', 'export'])
        expect(starts).toContain(`${t} ${p}`);
    expect(events.find((e) => e.type === 'index')).toMatchObject({ target: '', phase: 'publish' });
    const report = JSON.parse(j.out) as BuildReport;
    expect(report.index).toBe(true);
  }, 180_000);

  it('writes an oci: layout output that skopeo copies with --all', async () => {
    const dir = join(root, 'layout-out');
    const r = await buildJson(
      `oci:${dir}:app`,
      '--path',
      app,
      '--buildpack',
      archBp,
      '--run-image',
      runIndex,
      '--insecure-registry',
      registry.host,
      '--platform',
      both,
    );
    expect(r.digest).toBe(first.digest);
    const layout = await openLayoutStore(dir);
    expect((await layout.resolve('app'))?.digest).toBe(first.digest);
    const copy = join(root, 'layout-copy');
    await execa('skopeo', ['copy', '--all', `oci:${dir}:app`, `oci:${copy}:app`]);
    const copied = await openLayoutStore(copy);
    expect((await copied.resolve('app'))?.digest).toBe(first.digest);
    const ran = await podman.run(`oci:${dir}:app`);
    expect(ran.stdout).toContain('CNB_TARGET_ARCH=amd64');
  }, 180_000);

  it('inspect and rebase work on the index', async () => {
    const inspected = await runCli('inspect', image(), '--insecure-registry', registry.host, '--json');
    expect(inspected.code).toBe(0);
    expect(inspected.out).toContain('linux/386');
    // A new run image index: rebase swaps each child's run layers and writes a new index.
    const run = store('run');
    const images = [];
    for (const p of [AMD64, I386])
      images.push(
        await createRunImage({
          store: run,
          tag: `v2-${p.architecture}`,
          platform: p,
          extraFiles: { 'etc/run-image-version': '2\n' },
        }),
      );
    await publishIndex({ store: run, images: images.map((i) => i.digest), tags: ['v2'] });
    const rebased = await runCli(
      'rebase',
      image(),
      '--publish',
      '--run-image',
      `${registry.host}/run:v2`,
      '--insecure-registry',
      registry.host,
      '--json',
    );
    expect(rebased.err).toBe('');
    expect(rebased.code).toBe(0);
    const after = await podman.run(image(), {
      flags: ['--arch', '386'],
      entrypoint: '/bin/cat',
      args: ['/etc/run-image-version'],
    });
    expect(after.stdout.trim()).toBe('2');
  }, 180_000);
  it("a buildpack's [[targets]] filter detect per target: an amd64-only buildpack fails linux/386 in detect", async () => {
    const bp = join(root, 'amd64-only');
    await mkdir(join(bp, 'bin'), { recursive: true });
    await writeFile(
      join(bp, 'buildpack.toml'),
      'api = "0.12"\n[buildpack]\nid = "test/amd64-only"\nversion = "1"\n[[targets]]\nos = "linux"\narch = "amd64"\n',
    );
    await writeFile(join(bp, 'bin', 'detect'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    await writeFile(join(bp, 'bin', 'build'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
    const events: BuildEvent[] = [];
    const err = await build(
      {
        image: `oci:${join(root, 'amd64-only-out')}:x`,
        path: app,
        buildpacks: [bp],
        runImage: runIndex,
        insecureRegistries: [registry.host],
        platforms: [both],
        jobs: 1,
      },
      { onEvent: (e) => events.push(e) },
    ).catch((e: unknown) => e);
    expect((err as Error).message).toMatch(/^target linux\/386 failed in detect: /);
    // The lifecycle's reason reaches the caller as an event of that target and phase.
    expect(
      events.some(
        (e) =>
          e.target === 'linux/386' &&
          e.phase === 'detect' &&
          'message' in e &&
          /unable to satisfy target constraints/.test(e.message),
      ),
    ).toBe(true);
    expect(events).toContainEqual(
      expect.objectContaining({
        type: 'detected',
        target: 'linux/amd64',
        verdict: 'pass',
        buildpack: 'test/amd64-only@1',
      }),
    );
  }, 120_000);
});

describe('planning a multi-target build', () => {
  it('names the target, the run image and its platforms when the run image lacks one, before anything runs', async () => {
    const app = await makeApp('plan-run', { 'app.txt': 'x\n' });
    registry.resetCounters();
    const r = await runCli(
      'build',
      `${registry.host}/plan-run:latest`,
      '--path',
      app,
      '--buildpack',
      archBp,
      '--run-image',
      runAmd64Only,
      '--insecure-registry',
      registry.host,
      '--publish',
      '--platform',
      both,
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(
      `target linux/386: run image ${runAmd64Only} has no image for it (it has linux/amd64)`,
    );
    expect(r.out).not.toContain('===>');
    expect(registry.counters().byKind.upload ?? 0).toBe(0);
  });

  it('refuses a foreign target on the host executor, and one this machine cannot run at all', async () => {
    const app = await makeApp('plan-foreign', { 'app.txt': 'x\n' });
    const opts = {
      image: `oci:${join(root, 'foreign')}:x`,
      path: app,
      buildpacks: [archBp],
      runImage: runIndex,
      insecureRegistries: [registry.host],
      platforms: ['linux/arm64'],
    };
    const emulating = { native: [AMD64, I386], emulated: [{ os: 'linux', architecture: 'arm64' }] };
    await expect(planBuild(opts, { machine: emulating })).rejects.toSatisfy(
      (e: unknown) =>
        isPackfarmError(e, 'FOREIGN_TARGET_ON_HOST') && /target linux\/arm64/.test((e as Error).message),
    );
    await expect(planBuild(opts, { machine: { native: [AMD64], emulated: [] } })).rejects.toSatisfy(
      (e: unknown) =>
        isPackfarmError(e, 'TARGET_NOT_RUNNABLE') && /target linux\/arm64/.test((e as Error).message),
    );
  });

  it("defaults to the builder's [[targets]] this machine can run, saying what it left out", async () => {
    const app = await makeApp('plan-default', { 'app.txt': 'x\n' });
    const builderDir = join(root, 'builder-targets');
    await mkdir(builderDir, { recursive: true });
    await writeFile(
      join(builderDir, 'builder.toml'),
      [
        '[[buildpacks]]',
        `uri = "${archBp}"`,
        '[[order]]',
        '[[order.group]]',
        'id = "multiarch/arch-report"',
        '[[run.images]]',
        `image = "${runIndex}"`,
        '[[targets]]',
        'os = "linux"',
        'arch = "x86_64"',
        '[[targets]]',
        'os = "linux"',
        'arch = "386"',
        '[[targets]]',
        'os = "linux"',
        'arch = "arm64"',
        'variant = "v8"',
        '',
      ].join('\n'),
    );
    const plan = await planBuild(
      {
        image: `oci:${join(root, 'defaults')}:x`,
        path: app,
        builder: builderDir,
        insecureRegistries: [registry.host],
      },
      { machine: { native: [AMD64, I386], emulated: [] } },
    );
    try {
      expect(plan.targets.map((t) => t.name)).toEqual(['linux/amd64', 'linux/386']);
      expect(plan.index).toBe(true);
      expect(plan.notes.join('\n')).toMatch(/not building linux\/arm64 .*this machine cannot run it/);
    } finally {
      await plan.cleanup();
    }
  });

  it('with neither builder nor build image builds only this machine’s platform and says so', async () => {
    const app = await makeApp('plan-host', { 'app.txt': 'x\n' });
    const events: BuildEvent[] = [];
    const r = await build(
      {
        image: `oci:${join(root, 'host-only')}:x`,
        path: app,
        buildpacks: [archBp],
        runImage: runIndex,
        insecureRegistries: [registry.host],
      },
      { onEvent: (e) => events.push(e) },
    );
    expect(r.index).toBe(false);
    expect(r.targets.map((t) => t.platform)).toEqual([formatPlatform(AMD64)]);
    expect(r.notes.join('\n')).toMatch(/no builder or build image: .*only its own platform \(linux\/amd64\)/);
    expect(
      events.some((e) => e.type === 'info' && e.phase === 'plan' && /host executor/.test(e.message)),
    ).toBe(true);
    // No index: the one image is tagged itself.
    const layout = await openLayoutStore(join(root, 'host-only'));
    expect((await layout.resolve('x'))?.mediaType).toBe(MediaType.ociManifest);
    expect(await readdir(join(root, 'host-only'))).toContain('index.json');
  }, 120_000);
});
