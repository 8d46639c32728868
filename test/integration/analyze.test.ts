import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { exportCache } from '../../src/phase/cache.js';
import { runLifecycleCommand } from '../../src/cli/lifecycle.js';
import { layoutImageLocation, layoutPathFor } from '../../src/cli/lifecycle/analyzer.js';
import type { CliIO } from '../../src/cli/output.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { createRegistryStore } from '../../src/image/registry-store.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { analyzeToFile } from '../../src/phase/analyze.js';
import { readAnalyzedFile } from '../../src/platform/files.js';
import { createLogger } from '../../src/util/log.js';
import { parseToml } from '../../src/util/toml.js';
import { writeTestImage, writeTestIndex } from '../helpers/images.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { createRunImage } from '../helpers/run-image.js';

/**
 * The analyzer against real images: a busybox run image and a previous app image in a docker-registry and
 * in OCI layouts; the analyzer/restorer commands as a platform would call them.
 */
const AMD64 = parsePlatform('linux/amd64');
const LABEL = 'io.buildpacks.lifecycle.metadata';
const PREVIOUS_META = {
  buildpacks: [
    {
      key: 'example/node',
      version: '1.0.0',
      layers: { runtime: { sha: `sha256:${'a'.repeat(64)}`, launch: true, data: { version: '20' } } },
      store: { metadata: { builds: 1 } },
    },
  ],
  runImage: { topLayer: `sha256:${'b'.repeat(64)}`, reference: 'example.com/run@sha256:x' },
};

let root: string;
let registry: TestRegistry;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-analyze-'));
  registry = await startRegistry();
});
afterAll(async () => {
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

function capture() {
  const out: string[] = [];
  return { logger: createLogger({ level: 'debug', write: (l) => out.push(l) }), text: () => out.join('\n') };
}

describe('analyze', () => {
  it('records the previous image metadata and the run image target; downloads no layer', async () => {
    const opts = { insecureRegistries: [registry.host] };
    const runStore = createRegistryStore({ registry: registry.host, repository: 'run' }, opts);
    const run = await createRunImage({
      store: runStore,
      tag: 'v1',
      labels: { 'io.buildpacks.base.distro.name': 'busybox', 'io.buildpacks.base.distro.version': '1.36' },
    });
    const appStore = createRegistryStore({ registry: registry.host, repository: 'app' }, opts);
    const prev = await writeTestImage(appStore, {
      tag: 'latest',
      labels: { [LABEL]: JSON.stringify(PREVIOUS_META) },
    });

    registry.resetCounters();
    const analyzedPath = join(root, 'analyzed-registry.toml');
    const log = capture();
    await analyzeToFile({
      analyzedPath,
      runImage: { store: runStore, target: 'v1' },
      previousImage: { store: appStore, target: 'latest' },
      platform: AMD64,
      logger: log.logger,
    });
    // Two configs, never a layer.
    expect(registry.counters().blobGets).toBe(2);
    const raw = parseToml(await readFile(analyzedPath, 'utf8'), analyzedPath);
    expect(raw.image).toEqual({ reference: `${registry.host}/app@${prev.digest}` });
    expect(raw['run-image']).toEqual({
      reference: `${registry.host}/run@${run.digest}`,
      image: `${registry.host}/run:v1`,
      target: { os: 'linux', arch: 'amd64', distro: { name: 'busybox', version: '1.36' } },
    });
    const analyzed = await readAnalyzedFile(analyzedPath);
    expect(analyzed?.metadata).toMatchObject({
      buildpacks: [{ key: 'example/node', layers: { runtime: { data: { version: '20' } } } }],
    });
    expect(log.text()).not.toMatch(/WARN/);
  });

  it('a malformed previous-image label is a warning and a fresh build, not a crash', async () => {
    const store = await openLayoutStore(join(root, 'malformed'), { create: true });
    await writeTestImage(store, { tag: 'run', labels: {} });
    await writeTestImage(store, { tag: 'app', labels: { [LABEL]: '{"buildpacks": "not-a-list"' } });
    await writeTestImage(store, { tag: 'app2', labels: { [LABEL]: '{"buildpacks": 7}' } });
    for (const tag of ['app', 'app2']) {
      const log = capture();
      const path = join(root, `analyzed-${tag}.toml`);
      const res = await analyzeToFile({
        analyzedPath: path,
        runImage: { store, target: 'run' },
        previousImage: { store, target: tag },
        platform: AMD64,
        logger: log.logger,
      });
      expect(res.previousMetadata).toBeUndefined();
      expect(log.text()).toMatch(/WARN: Ignoring the metadata of previous image .*building from scratch/);
      const written = await readAnalyzedFile(path);
      expect(written?.metadata).toBeUndefined();
      expect(written?.['run-image']?.target).toEqual({ os: 'linux', arch: 'amd64' });
    }
  });

  it('reads a label with JSON nulls (as Go lifecycles write them) into a valid analyzed.toml', async () => {
    const store = await openLayoutStore(join(root, 'nulls'), { create: true });
    await writeTestImage(store, { tag: 'run' });
    const label = {
      ...PREVIOUS_META,
      app: null,
      runImage: { ...PREVIOUS_META.runImage, mirrors: null },
      buildpacks: [
        { ...PREVIOUS_META.buildpacks[0], layers: { l: { sha: 'sha256:1', data: null, launch: true } } },
      ],
    };
    await writeTestImage(store, { tag: 'app', labels: { [LABEL]: JSON.stringify(label) } });
    const path = join(root, 'analyzed-nulls.toml');
    const res = await analyzeToFile({
      analyzedPath: path,
      runImage: { store, target: 'run' },
      previousImage: { store, target: 'app' },
      platform: AMD64,
    });
    expect(res.previousMetadata?.buildpacks[0]?.layers.l).toEqual({
      sha: 'sha256:1',
      launch: true,
      build: false,
      cache: false,
    });
    const written = await readAnalyzedFile(path);
    expect(written?.metadata).toMatchObject({
      buildpacks: [{ key: 'example/node', layers: { l: { sha: 'sha256:1' } } }],
    });
  });

  it('a missing previous image is fine; a run image index gives the requested platform', async () => {
    const store = await openLayoutStore(join(root, 'index'), { create: true });
    const amd = await writeTestImage(store, { platform: 'linux/amd64' });
    const arm = await writeTestImage(store, {
      platform: 'linux/arm64',
      labels: { 'io.buildpacks.base.distro.name': 'ubuntu', 'io.buildpacks.base.distro.version': '24.04' },
    });
    await writeTestIndex(store, [amd, arm], { tag: 'run' });
    const res = await analyzeToFile({
      analyzedPath: join(root, 'analyzed-index.toml'),
      runImage: { store, target: 'run' },
      previousImage: { store, target: 'nothing-here' },
      platform: parsePlatform('linux/arm64'),
    });
    expect(res.analyzed.image).toBeUndefined();
    expect(res.runImage.digest).toBe(arm.digest);
    expect(res.analyzed['run-image']?.target).toEqual({
      os: 'linux',
      arch: 'arm64',
      distro: { name: 'ubuntu', version: '24.04' },
    });
  });
});

describe('lifecycle analyzer + restorer commands', () => {
  const io = () => {
    const out: string[] = [];
    const err: string[] = [];
    const cli: CliIO = { out: (t) => out.push(t), err: (t) => err.push(t) };
    return { cli, out, err };
  };

  it('run in layout mode, then restore from a dir cache', async () => {
    const layoutDir = join(root, 'layout-mode');
    const runStore = await openLayoutStore(layoutPathFor(layoutDir, 'example.com/cnb/run:v1'), {
      create: true,
    });
    await writeTestImage(runStore, { tag: 'latest', platform: 'linux/amd64' });
    const appStore = await openLayoutStore(layoutPathFor(layoutDir, 'example.com/team/app:v2'), {
      create: true,
    });
    await writeTestImage(appStore, { tag: 'latest', labels: { [LABEL]: JSON.stringify(PREVIOUS_META) } });
    expect(layoutPathFor(layoutDir, 'example.com/team/app:v2')).toBe(
      join(layoutDir, 'example.com/team/app/v2'),
    );

    const layers = join(root, 'cli-layers');
    await mkdir(layers, { recursive: true });
    const env = {
      CNB_PLATFORM_API: '0.13',
      CNB_LAYERS_DIR: layers,
      CNB_USE_LAYOUT: 'true',
      CNB_LAYOUT_DIR: layoutDir,
      // Layout mode is experimental (the default mode refuses it); quiet keeps stderr empty.
      CNB_EXPERIMENTAL_MODE: 'quiet',
    };
    const a = io();
    const code = await runLifecycleCommand(
      ['analyzer', '-run-image', 'example.com/cnb/run:v1', 'example.com/team/app:v2'],
      a.cli,
      env,
    );
    expect(a.err).toEqual([]);
    expect(code).toBe(0);
    const analyzed = await readAnalyzedFile(join(layers, 'analyzed.toml'));
    expect(analyzed?.image?.reference).toMatch(/^\/.*layout-mode\/example.com\/team\/app\/v2@sha256:/);
    expect(analyzed?.['run-image']?.target).toEqual({ os: 'linux', arch: 'amd64' });

    // A cache written by an earlier export of the same buildpack.
    const built = join(root, 'cli-built');
    await mkdir(join(built, 'example_node', 'modules'), { recursive: true });
    await writeFile(join(built, 'example_node', 'modules', 'm.js'), 'm\n');
    await writeFile(
      join(built, 'example_node', 'modules.toml'),
      '[types]\ncache = true\n[metadata]\nk = "v"\n',
    );
    const group = [{ id: 'example/node', version: '1.0.0', api: '0.10' }];
    const cacheDir = join(root, 'cli-cache');
    await exportCache({ location: { kind: 'dir', dir: cacheDir }, layersDir: built, group, target: AMD64 });
    await writeFile(
      join(layers, 'group.toml'),
      '[[group]]\nid = "example/node"\nversion = "1.0.0"\napi = "0.10"\n',
    );

    const r = io();
    const rcode = await runLifecycleCommand(['restorer', '-cache-dir', cacheDir], r.cli, env);
    expect(r.err).toEqual([]);
    expect(rcode).toBe(0);
    expect(r.out.join('\n')).toMatch(/Restoring data for "example\/node:modules" from cache/);
    expect(await readFile(join(layers, 'example_node', 'modules', 'm.js'), 'utf8')).toBe('m\n');
    expect(await readFile(join(layers, 'example_node', 'runtime.sha'), 'utf8')).toBe(
      `sha256:${'a'.repeat(64)}`,
    );
    expect(parseToml(await readFile(join(layers, 'example_node', 'store.toml'), 'utf8'), 'store')).toEqual({
      metadata: { builds: 1 },
    });
  });

  it('list both phases and print their flags', async () => {
    const a = io();
    expect(await runLifecycleCommand(['--help'], a.cli, {})).toBe(0);
    expect(a.out.join('\n')).toMatch(/analyzer[\s\S]*restorer/);
    const r = io();
    expect(await runLifecycleCommand(['restorer', '--help'], r.cli, {})).toBe(0);
    expect(r.out.join('\n')).toMatch(/-cache-image[\s\S]*-skip-layers/);
  });

  it('refuses -daemon clearly', async () => {
    const a = io();
    const code = await runLifecycleCommand(['analyzer', '-daemon', '-run-image', 'x/run', 'x/app'], a.cli, {
      CNB_PLATFORM_API: '0.13',
    });
    expect(code).toBe(3);
    expect(a.err.join('\n')).toMatch(/-daemon is not supported/);
  });
});

describe('layoutPathFor', () => {
  it('maps tags, digests and Docker Hub names as the platform spec does', () => {
    expect(layoutPathFor('/l', 'cnbs/sample-stack-run:bionic')).toBe(
      '/l/index.docker.io/cnbs/sample-stack-run/bionic',
    );
    expect(layoutPathFor('/l', 'busybox')).toBe('/l/index.docker.io/library/busybox/latest');
    expect(layoutPathFor('/l', `127.0.0.1:5000/a/b@sha256:${'c'.repeat(64)}`)).toBe(
      `/l/127.0.0.1:5000/a/b/sha256/${'c'.repeat(64)}`,
    );
  });
});

describe('layoutImageLocation', () => {
  const d = `sha256:${'d'.repeat(64)}`;
  it('maps a reference to its own layout under its tag or digest, the same in every phase', () => {
    expect(layoutImageLocation('/l', 'example.test/team/app:v1')).toEqual({
      transport: 'oci',
      dir: '/l/example.test/team/app/v1',
      tag: 'v1',
    });
    expect(layoutImageLocation('/l', `example.test/team/app@${d}`)).toEqual({
      transport: 'oci',
      dir: `/l/example.test/team/app/sha256/${'d'.repeat(64)}`,
      digest: d,
    });
  });

  it("takes back analyzed.toml's <path>@<digest> form and packfarm's oci: form", () => {
    expect(layoutImageLocation('/l', `/l/example.test/team/app/v1@${d}`)).toEqual({
      transport: 'oci',
      dir: '/l/example.test/team/app/v1',
      digest: d,
    });
    expect(layoutImageLocation('/l', '/elsewhere/run')).toEqual({ transport: 'oci', dir: '/elsewhere/run' });
    expect(layoutImageLocation('/l', 'oci:/x/y:t')).toEqual({ transport: 'oci', dir: '/x/y', tag: 't' });
  });
});
