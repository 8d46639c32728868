import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildReport, TargetReport } from '../../src/api/build.js';
import { writeLayer } from '../../src/archive/index.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { canonicalJson } from '../../src/util/json.js';
import { registryStore, runCli, usePackfarmHome } from '../helpers/cli.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner, createVersionedRunImage } from '../helpers/run-image.js';

/**
 * `packfarm build` end to end, in process: fixture buildpacks on the host executor, a real registry behind a
 * counting proxy, podman running what was built, skopeo and umoci reading it.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = join(repoRoot, 'test', 'fixtures');
const helloBp = join(fixtures, 'buildpacks', 'export', 'export_hello', '1.0.0');
const cacheBp = join(fixtures, 'buildpacks', 'cache', 'test_cache-user', '1.0.0');

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let runRef: string;
let restoreHome: (() => void) | undefined;

/** A one-platform build's report: its one target, with the whole report beside it. */
type OneTarget = TargetReport & { report: BuildReport };

async function buildJson(...argv: string[]): Promise<OneTarget> {
  const r = await runCli('build', ...argv, '--json');
  if (r.code !== 0) throw new Error(`packfarm build failed (${r.code}):\n${r.err}\n${r.out}`);
  const report = JSON.parse(r.out) as BuildReport;
  // One target: a plain image, the report's digest is the image's own.
  expect(report.index).toBe(false);
  expect(report.targets).toHaveLength(1);
  expect(report.digest).toBe(report.targets[0]!.digest);
  return { ...report.targets[0]!, report };
}

/** `build --json` of APP into OUT on the test run image (v1 in the test registry), with more flags after. */
function buildOnRun(out: string, app: string, ...extra: string[]): Promise<OneTarget> {
  return buildJson(out, '--path', app, '--run-image', runRef, '--insecure-registry', registry.host, ...extra);
}

/** `packfarm build OUT --path APP` with the hello buildpack on the test run image, more flags after. */
function buildHello(out: string, app: string, ...extra: string[]) {
  return runCli('build', out, '--path', app, '--run-image', runRef, '--buildpack', helloBp, ...extra);
}

async function makeApp(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, 'apps', name);
  for (const [rel, text] of Object.entries(files)) {
    await cp(join(fixtures, 'apps', 'build-basic'), dir, { recursive: true });
    await writeFile(join(dir, rel), text);
  }
  return dir;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-build-cmd-'));
  restoreHome = usePackfarmHome(join(root, 'home'));
  registry = await startRegistry();
  podman = await createPodmanRunner();
  const store = registryStore(registry, 'run');
  await createVersionedRunImage({ store, tag: 'v1', version: 1 });
  runRef = `${registry.host}/run:v1`;
}, 120_000);

afterAll(async () => {
  restoreHome?.();
  await podman?.cleanup();
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('packfarm build --publish to a registry', () => {
  const image = () => `${registry.host}/app:latest`;
  let app: string;
  let first: OneTarget;
  // The same build each time: only the app's files change between the tests.
  const publishHello = (dir: string) =>
    buildOnRun(image(), dir, '--buildpack', helloBp, '--publish', '--cache-dir', join(root, 'cache-hello'));

  // The build every test of this group starts from; each test reads it and changes nothing it reads.
  beforeAll(async () => {
    app = await makeApp('hello', { 'app.txt': 'version 1\n' });
    first = await publishHello(app);
  }, 180_000);

  it('builds an image podman runs: default process, another type, overriding args, launch env', async () => {
    expect(first.buildpacks).toEqual([{ id: 'export/hello', version: '1.0.0' }]);
    expect(first.processes).toEqual(
      expect.arrayContaining([
        { type: 'web', default: true },
        { type: 'worker', default: false },
      ]),
    );
    // The run image's layer was already in the registry under another repository: mounted, never uploaded.
    expect(first.baseLayers.uploaded).toBe(0);
    expect(first.baseLayers.mounted + first.baseLayers.exists).toBeGreaterThan(0);
    // The app's layers and config were sent: the report counts their bytes, the build's total is the target's.
    const appBytes = first.layers.filter((l) => l.outcome === 'added').reduce((a, l) => a + l.size, 0);
    expect(appBytes).toBeGreaterThan(0);
    expect(first.bytesUploaded).toBeGreaterThan(appBytes);
    expect(first.report.bytesUploaded).toBe(first.bytesUploaded);

    const web = await podman.run(image());
    expect(web.stderr).not.toMatch(/Error/);
    expect(web.stdout.trim()).toBe(
      'hello world GREETING=bonjour WEB_ONLY=web-env WORKER_MODE=unset FROM_EXECD=yes pwd=/workspace user=1000',
    );
    const args = await podman.run(image(), { args: ['there'] });
    expect(args.stdout.trim()).toMatch(/^hello there GREETING=bonjour/);
    const worker = await podman.run(image(), { entrypoint: 'worker' });
    expect(worker.stdout.trim()).toBe(
      'worker a b GREETING=bonjour WEB_ONLY=unset WORKER_MODE=busy FROM_EXECD=yes',
    );

    const inspect = await execa('skopeo', ['inspect', '--tls-verify=false', `docker://${image()}`]);
    const info = JSON.parse(inspect.stdout) as { Digest: string; Labels: Record<string, string> };
    expect(info.Digest).toBe(first.digest);
    expect(info.Labels['io.buildpacks.lifecycle.metadata']).toContain(first.runImage.topLayer);
  }, 180_000);

  it('rebuilds with no change without uploading a single blob', async () => {
    registry.resetCounters();
    const again = await publishHello(app);
    expect(again.digest).toBe(first.digest);
    expect(again.layers.every((l) => l.outcome === 'reused')).toBe(true);
    const c = registry.counters();
    expect(c.blobUploads).toBe(0);
    expect(c.mounts).toBe(0);
    expect(c.bytesUploaded).toBe(0);
    expect(again.bytesUploaded).toBe(0);
    expect(again.report.bytesUploaded).toBe(0);
    // The tag already names the same manifest: nothing is sent at all.
    expect(c.manifestPuts).toBe(0);
  }, 180_000);

  it('--previous-image in another repository: its layers are mounted, not uploaded again', async () => {
    registry.resetCounters();
    const other = await buildOnRun(
      `${registry.host}/app-copy:latest`,
      app,
      '--buildpack',
      helloBp,
      '--publish',
      '--previous-image',
      image(),
      '--cache-dir',
      join(root, 'cache-hello'),
    );
    expect(other.digest).toBe(first.digest);
    expect(other.layers.filter((l) => l.outcome === 'added')).toEqual([]);
    expect(other.layers.some((l) => l.outcome === 'mounted')).toBe(true);
    const c = registry.counters();
    // Only the config blob is new to the repository; every layer is a mount.
    expect(c.blobUploads).toBe(1);
    expect(c.mounts).toBeGreaterThanOrEqual(other.layers.length);
  }, 180_000);

  it('after a change to one app file uploads only the app layer (and the new config)', async () => {
    // A changed copy of the app, built into another tag of the repository on the first build as previous image.
    const changedApp = await makeApp('hello-v2', { 'app.txt': 'version 2\n' });
    registry.resetCounters();
    const changed = await buildOnRun(
      `${registry.host}/app:v2`,
      changedApp,
      '--buildpack',
      helloBp,
      '--publish',
      '--previous-image',
      image(),
      '--cache-dir',
      join(root, 'cache-hello'),
    );
    expect(changed.digest).not.toBe(first.digest);
    expect(changed.layers.filter((l) => l.outcome === 'added').map((l) => l.name)).toEqual(['app']);
    const c = registry.counters();
    // One layer blob and one config blob.
    expect(c.blobUploads).toBe(2);
    expect(c.mounts).toBe(0);
    const appLayer = changed.layers.find((l) => l.name === 'app');
    expect(c.bytesUploaded).toBeGreaterThanOrEqual(appLayer?.size ?? 0);
    // What the report says went up is what the registry received.
    expect(changed.bytesUploaded).toBe(c.bytesUploaded);
  }, 180_000);
});

describe('rebase and rebuild agree', () => {
  it('rebasing onto run image v2 and rebuilding on v2 give the same digest (same label bytes)', async () => {
    const store = registryStore(registry, 'run');
    await createVersionedRunImage({ store, tag: 'v2', version: 2 });
    const runV2 = `${registry.host}/run:v2`;
    const app = await makeApp('same', { 'app.txt': 'same content\n' });
    const onV1 = await buildOnRun(`${registry.host}/same:rebased`, app, '--buildpack', helloBp, '--publish');
    const rebased = await runCli(
      'rebase',
      `${registry.host}/same:rebased`,
      '--run-image',
      runV2,
      '--publish',
      '--json',
    );
    expect(rebased.code, rebased.err).toBe(0);
    const rebasedDigest = (JSON.parse(rebased.out) as { digest: string }).digest;
    expect(rebasedDigest).not.toBe(onV1.digest);
    const rebuilt = await buildJson(
      `${registry.host}/same:rebuilt`,
      '--path',
      app,
      '--run-image',
      runV2,
      '--buildpack',
      helloBp,
      '--publish',
    );
    expect(rebuilt.digest).toBe(rebasedDigest);
  }, 180_000);
});

describe('packfarm build into OCI layouts', () => {
  it('writes a bare reference to the default local layout, readable by skopeo, umoci and podman', async () => {
    const app = await makeApp('local', { 'app.txt': 'local\n' });
    const r = await buildOnRun('example.test/team/app:dev', app, '--buildpack', helloBp);
    const dir = join(root, 'home', 'images', 'example.test', 'team', 'app');
    expect(r.report.location).toBe(`oci:${dir}:dev`);
    const inspect = await execa('skopeo', ['inspect', `oci:${dir}:dev`]);
    expect((JSON.parse(inspect.stdout) as { Digest: string }).Digest).toBe(r.digest);
    const bundle = join(root, 'bundle');
    await execa('umoci', ['unpack', '--rootless', '--image', `${dir}:dev`, bundle]);
    expect(await readFile(join(bundle, 'rootfs', 'workspace', 'app.txt'), 'utf8')).toBe('local\n');
    expect(await readFile(join(bundle, 'rootfs', 'etc', 'run-image-version'), 'utf8')).toBe('1\n');
    const run = await podman.run(`oci:${dir}:dev`);
    expect(run.stdout).toMatch(/^hello world GREETING=bonjour/);
  }, 180_000);

  it('a host:port registry goes to a directory without ":"; the printed location opens as printed; loopback needs no flag', async () => {
    const app = await makeApp('hostport', { 'app.txt': 'hostport\n' });
    // Human output: the summary's location line is what a user copies into podman or skopeo.
    const r = await buildHello(`${registry.host}/team/app:dev`, app);
    // No --insecure-registry: a loopback registry may speak plain HTTP, as with docker and pack.
    expect(r.code, r.err).toBe(0);
    const printed = /location: (\S+)/.exec(r.out)?.[1] ?? '';
    const dir = join(root, 'home', 'images', registry.host.replace(':', '_'), 'team', 'app');
    expect(printed).toBe(`oci:${dir}:dev`);
    expect(printed.slice('oci:'.length).indexOf(':')).toBe(dir.length);
    const inspect = await execa('skopeo', ['inspect', printed]);
    expect((JSON.parse(inspect.stdout) as { Digest: string }).Digest).toMatch(/^sha256:/);
    const run = await podman.run(printed);
    expect(run.stdout).toMatch(/^hello world GREETING=bonjour/);
  }, 180_000);

  it('gives the same digest for two clean builds of the same app (determinism)', async () => {
    const app = await makeApp('det', { 'app.txt': 'same\n' });
    const build = (n: number) =>
      buildOnRun(
        `oci:${join(root, `det-${n}`)}:app`,
        app,
        '--buildpack',
        helloBp,
        '--cache-dir',
        join(root, `det-cache-${n}`),
      );
    const a = await build(1);
    const b = await build(2);
    expect(b.digest).toBe(a.digest);
    expect(a.layers.every((l) => l.outcome === 'added')).toBe(true);
  }, 180_000);

  it('builds a project.toml app: relative buildpack uri, build env, exclude; host paths become image paths', async () => {
    const app = join(root, 'apps', 'project-relative');
    await cp(join(fixtures, 'apps', 'project-relative'), app, { recursive: true });
    const out = `oci:${join(root, 'project')}:app`;
    const r = await buildOnRun(out, app);
    expect(r.buildpacks.map((b) => b.id)).toEqual(['fixtures/local']);
    const bundle = join(root, 'project-bundle');
    await execa('umoci', ['unpack', '--rootless', '--image', `${join(root, 'project')}:app`, bundle]);
    // excluded by project.toml
    await expect(readFile(join(bundle, 'rootfs', 'workspace', 'README.md'))).rejects.toThrow();
    const run = await podman.run(out);
    expect(run.stderr).not.toMatch(/Error/);
    expect(run.stdout.trim()).toBe('the app');
  }, 180_000);
  it('builds a schema 0.1 project.toml app ([[build.buildpacks]] uri, [build] exclude, [[build.env]])', async () => {
    const app = join(root, 'apps', 'project-v01');
    await cp(join(fixtures, 'apps', 'project-v01'), app, { recursive: true });
    const out = `oci:${join(root, 'project-v01')}:app`;
    const r = await buildOnRun(out, app);
    expect(r.buildpacks).toEqual([{ id: 'fixtures/sh-script', version: '0.0.1' }]);
    const run = await podman.run(out);
    expect(run.stderr).not.toMatch(/Error/);
    expect(run.stdout.trim()).toBe('app says hello to schema 0.1 from /workspace');
    const inspect = await execa('skopeo', ['inspect', out]);
    const labels = (JSON.parse(inspect.stdout) as { Labels: Record<string, string> }).Labels;
    // The buildpack wrote its app dir into a launch layer; the build dir is the same for every build of this
    // image, so a rebuild gives the same layer and the same image.
    const again = await buildOnRun(out, app);
    expect(again.digest).toBe(r.digest);
    expect(again.layers.every((l) => l.outcome === 'reused')).toBe(true);
    expect(JSON.parse(labels['io.buildpacks.project.metadata'] ?? '{}')).toEqual({
      source: {
        type: 'project',
        version: { declared: '2.1.0' },
        metadata: { url: 'https://example.test/project-v01' },
      },
    });
  }, 180_000);
  it('takes a buildpack as a .tgz archive, and --env / --env-file over project.toml env', async () => {
    const app = join(root, 'apps', 'project-v01-env');
    await cp(join(fixtures, 'apps', 'project-v01'), app, { recursive: true });
    const tgz = join(root, 'sh-buildpack.tgz');
    await execa('tar', ['-czf', tgz, '-C', join(app, 'sh-buildpack'), '.']);
    await writeFile(join(root, 'build.env'), 'WHO=env file\n');
    const out = `oci:${join(root, 'project-v01-env')}:app`;
    const build = (...extra: string[]) => buildOnRun(out, app, '--buildpack', tgz, ...extra);
    await build('--env-file', join(root, 'build.env'));
    expect((await podman.run(out)).stdout.trim()).toBe('app says hello to env file from /workspace');
    await build('--env-file', join(root, 'build.env'), '--env', 'WHO=flag');
    expect((await podman.run(out)).stdout.trim()).toBe('app says hello to flag from /workspace');
  }, 180_000);
  it('runs an inline buildpack from project.toml (script run by its shell; detect always passes), then the post group', async () => {
    const app = join(root, 'apps', 'inline');
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'greeting.txt'), 'inline hello\n');
    await writeFile(
      join(app, 'project.toml'),
      [
        '[_]',
        'schema-version = "0.2"',
        '[[io.buildpacks.group]]',
        'id = "example/inline"',
        '[io.buildpacks.group.script]',
        'api = "0.10"',
        'shell = "/bin/sh"',
        "inline = '''",
        'set -eu',
        'cat > "$CNB_LAYERS_DIR/launch.toml" <<TOML',
        '[[processes]]',
        'type = "web"',
        'command = ["cat", "greeting.txt"]',
        'default = true',
        'TOML',
        "'''",
        '[[io.buildpacks.post.group]]',
        `uri = "${cacheBp}"`,
        '',
      ].join('\n'),
    );
    const out = `oci:${join(root, 'inline-out')}:app`;
    const r = await buildOnRun(out, app);
    // The post group runs after the group.
    expect(r.buildpacks).toEqual([
      { id: 'example/inline', version: '0.0.0' },
      { id: 'test/cache-user', version: '1.0.0' },
    ]);
    const run = await podman.run(out);
    expect(run.stdout.trim()).toBe('inline hello');
  }, 180_000);
});

describe('packfarm build caches', () => {
  async function cacheBuild(out: string, cacheFlag: string[], extra: string[] = []) {
    const app = join(root, 'apps', 'cache-app');
    await cp(join(fixtures, 'apps', 'build-basic'), app, { recursive: true });
    const r = await runCli(
      'build',
      out,
      '--path',
      app,
      '--buildpack',
      cacheBp,
      '--run-image',
      runRef,
      '--insecure-registry',
      registry.host,
      ...cacheFlag,
      ...extra,
    );
    if (r.code !== 0) throw new Error(`build failed:\n${r.err}\n${r.out}`);
    return r.out;
  }

  it('a cache dir restores the cache=true layer with its metadata; --clear-cache starts over', async () => {
    const out = `oci:${join(root, 'cache-dir-out')}:app`;
    const flag = ['--cache-dir', join(root, 'cache-dir')];
    expect(await cacheBuild(out, flag)).toMatch(/deps: building version 1/);
    const second = await cacheBuild(out, flag);
    expect(second).toMatch(/deps: reusing cached version 1/);
    expect(second).toMatch(/runtime: previous metadata flavour = "plain"/);
    expect(await cacheBuild(out, flag, ['--clear-cache'])).toMatch(/deps: building version 1/);
  }, 180_000);

  it('a cache image in the registry restores the cache=true layer with its metadata', async () => {
    const out = `${registry.host}/cached-app:latest`;
    const flag = ['--cache-image', `${registry.host}/cached-app-cache:build`, '--publish'];
    // (--insecure-registry is passed by cacheBuild)
    expect(await cacheBuild(out, flag)).toMatch(/deps: building version 1/);
    const second = await cacheBuild(out, flag);
    expect(second).toMatch(/deps: reusing cached version 1/);
    expect(second).toMatch(/runtime: previous metadata flavour = "plain"/);
  }, 180_000);
});

describe('packfarm build with a builder', () => {
  it('takes order and run image from a builder.toml directory; ID@VERSION names a builder buildpack', async () => {
    const builderDir = join(root, 'builder-toml');
    await mkdir(builderDir, { recursive: true });
    await writeFile(
      join(builderDir, 'builder.toml'),
      [
        '[[buildpacks]]',
        `uri = "${helloBp}"`,
        '[[buildpacks]]',
        `uri = "${cacheBp}"`,
        '[[order]]',
        '[[order.group]]',
        'id = "export/hello"',
        'version = "1.0.0"',
        '[[run.images]]',
        `image = "${runRef}"`,
        '',
      ].join('\n'),
    );
    const app = await makeApp('with-builder', { 'app.txt': 'builder\n' });
    const image = `${registry.host}/builder-app:latest`;
    const r = await buildJson(
      image,
      '--path',
      app,
      '--builder',
      builderDir,
      '--publish',
      '--insecure-registry',
      registry.host,
    );
    expect(r.buildpacks).toEqual([{ id: 'export/hello', version: '1.0.0' }]);
    expect(r.runImage.reference).toMatch(new RegExp(`^${registry.host}/run@sha256:`));
    const run = await podman.run(image);
    expect(run.stdout).toMatch(/^hello world GREETING=bonjour/);

    const pinned = await buildJson(
      `oci:${join(root, 'pinned')}:app`,
      '--path',
      app,
      '--builder',
      builderDir,
      '--buildpack',
      'test/cache-user@1.0.0',
      '--insecure-registry',
      registry.host,
    );
    expect(pinned.buildpacks).toEqual([{ id: 'test/cache-user', version: '1.0.0' }]);
  }, 180_000);

  it('runs the buildpacks of a builder image (oci: layout), with its run image from the builder label', async () => {
    // A builder image: one layer holding /cnb/order.toml and /cnb/buildpacks/<id>/<version>/.
    const tree = join(root, 'builder-tree');
    await mkdir(join(tree, 'cnb', 'buildpacks', 'export_hello'), { recursive: true });
    await cp(helloBp, join(tree, 'cnb', 'buildpacks', 'export_hello', '1.0.0'), { recursive: true });
    await writeFile(
      join(tree, 'cnb', 'order.toml'),
      '[[order]]\n[[order.group]]\nid = "export/hello"\nversion = "1.0.0"\n',
    );
    const layerFile = join(root, 'builder-layer.tar.gz');
    const layer = await writeLayer({ dir: tree, out: layerFile });
    const store = await openLayoutStore(join(root, 'builder-image'), { create: true });
    const gz = await readFile(layerFile);
    await store.putBlob({ digest: layer.digest, size: layer.size, open: () => Readable.from([gz]) });
    const config = Buffer.from(
      canonicalJson({
        architecture: 'amd64',
        os: 'linux',
        config: {
          Labels: {
            'io.buildpacks.builder.metadata': JSON.stringify({ images: [{ image: runRef }] }),
          },
        },
        rootfs: { type: 'layers', diff_ids: [layer.diffId] },
      }),
    );
    const configDigest = sha256Digest(config);
    await store.putBlob({ digest: configDigest, size: config.length, open: () => Readable.from([config]) });
    const manifest = Buffer.from(
      canonicalJson({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: configDigest, size: config.length },
        layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size }],
      }),
    );
    await store.putManifest({ bytes: manifest, mediaType: MediaType.ociManifest, tag: 'builder' });

    const app = await makeApp('builder-image', { 'app.txt': 'from a builder image\n' });
    const out = `oci:${join(root, 'builder-image-out')}:app`;
    const r = await buildJson(
      out,
      '--path',
      app,
      '--builder',
      `oci:${join(root, 'builder-image')}:builder`,
      // The test builder image holds only /cnb (no OS to run buildpacks in): run them on this machine.
      '--executor',
      'host',
      '--insecure-registry',
      registry.host,
    );
    expect(r.buildpacks).toEqual([{ id: 'export/hello', version: '1.0.0' }]);
    const run = await podman.run(out, { args: ['builder'] });
    expect(run.stdout).toMatch(/^hello builder GREETING=bonjour/);
  }, 180_000);
});

describe("pack's build flags", () => {
  it('--sbom-output-dir, --report-output-dir, --gid, --cache image spec, notes for --lifecycle-image/--trust-builder', async () => {
    const app = await makeApp('flags', { 'app.txt': 'flags\n' });
    const out = join(root, 'flags-out');
    const r = await buildHello(
      `oci:${join(root, 'flags-img')}:app`,
      app,
      '--sbom-output-dir',
      join(out, 'sbom-dir'),
      '--report-output-dir',
      join(out, 'report-dir'),
      '--gid',
      '2345',
      '--cache',
      `type=build;format=image;name=${registry.host}/flags-cache`,
      '--lifecycle-image',
      'buildpacksio/lifecycle:0.21',
      '--trust-builder',
      '--network',
      'host',
    );
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('note: --lifecycle-image buildpacksio/lifecycle:0.21 is not used');
    expect(r.out).toContain('note: --trust-builder has no effect');
    expect(r.out).toContain('--network host: buildpacks run on this machine');
    const sbom = await readFile(
      join(out, 'sbom-dir', 'sbom', 'launch', 'export_hello', 'hello', 'sbom.cdx.json'),
      'utf8',
    );
    expect(JSON.parse(sbom).bomFormat).toBe('CycloneDX');
    const report = await readFile(join(out, 'report-dir', 'report.toml'), 'utf8');
    const digest = /digest: +(sha256:\S+)/.exec(r.out)?.[1];
    expect(report).toContain(`digest = "${digest}"`);
    // The cache went to the registry image the spec named.
    const cache = await execa('skopeo', [
      'inspect',
      '--tls-verify=false',
      `docker://${registry.host}/flags-cache:latest`,
    ]);
    expect(JSON.parse(cache.stdout).Labels['io.buildpacks.lifecycle.cache.metadata']).toBeDefined();
    // --gid owns the app (and buildpack) layers in the image.
    const layout = join(root, 'flags-img');
    const raw = await execa('skopeo', ['inspect', '--raw', `oci:${layout}:app`]);
    const layers = (JSON.parse(raw.stdout) as { layers: Array<{ digest: string }> }).layers;
    const listings = await Promise.all(
      layers.map(async (l) => {
        const blob = join(layout, 'blobs', 'sha256', l.digest.slice('sha256:'.length));
        return (await execa('tar', ['-tvzf', blob, '--numeric-owner'])).stdout;
      }),
    );
    const appLine =
      listings
        .join('\n')
        .split('\n')
        .find((l) => l.endsWith('workspace/app.txt')) ?? '';
    expect(appLine).toMatch(/^\S+ \d+\/2345 /);
  }, 180_000);

  it('--pull-policy never reads the run image from the local layout, and says where it looked when absent', async () => {
    const app = await makeApp('pull', { 'app.txt': 'pull\n' });
    const name = `${registry.host}/pulled-run:v1`;
    const missing = await runCli(
      'build',
      `oci:${join(root, 'pull-img')}:app`,
      '--path',
      app,
      '--run-image',
      name,
      '--buildpack',
      helloBp,
      '--pull-policy',
      'never',
    );
    expect(missing.code).toBe(1);
    const localDir = join(root, 'home', 'images', registry.host.replace(':', '_'), 'pulled-run');
    expect(missing.err).toContain(
      `run image ${name}: not in the local layout oci:${localDir}:v1, and --pull-policy never forbids the registry`,
    );
    // A copy in the local layout (as `packfarm image copy` makes it) is used, without the registry.
    const copy = await runCli('image', 'copy', runRef, `oci:${localDir}:v1`);
    expect(copy.code, copy.err).toBe(0);
    registry.resetCounters();
    const built = await buildJson(
      `oci:${join(root, 'pull-img')}:app`,
      '--path',
      app,
      '--run-image',
      name,
      '--buildpack',
      helloBp,
      '--pull-policy',
      'never',
    );
    expect(registry.counters().requests).toBe(0);
    expect(built.runImage.reference).toContain(`${registry.host}/pulled-run@sha256:`);
    const bad = await runCli('build', 'x', '--path', app, '--pull-policy', 'sometimes');
    expect(bad.err).toContain('--pull-policy "sometimes": not a pull policy');
  }, 180_000);

  it('refuses --network none and --volume with the host executor, saying why', async () => {
    const app = await makeApp('net', { 'app.txt': 'net\n' });
    const none = await buildHello(`oci:${join(root, 'net-img')}:app`, app, '--network', 'none');
    expect(none.code).toBe(1);
    expect(none.err).toContain(
      '--network none: the host executor runs buildpacks as processes on this machine',
    );
    const vol = await buildHello(`oci:${join(root, 'net-img')}:app`, app, '--volume', `${app}:/data`);
    expect(vol.code).toBe(1);
    expect(vol.err).toContain(`--volume ${app}:/data: the host executor runs buildpacks on this machine`);
  });
});

describe('packfarm build errors', () => {
  it('needs --run-image without a builder, and says so', async () => {
    const app = await makeApp('err', { 'app.txt': 'x\n' });
    const r = await runCli('build', `oci:${join(root, 'err')}:x`, '--path', app, '--buildpack', helloBp);
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/--run-image is required/);
  });

  it('shows every --tag in the summary; refuses a bare --tag beside an oci: IMAGE', async () => {
    const app = await makeApp('tags', { 'app.txt': 'tags\n' });
    const out = `oci:${join(root, 'tags')}:app`;
    const r = await buildHello(
      out,
      app,
      '--tag',
      `oci:${join(root, 'tags')}:v2`,
      '--tag',
      `oci:${join(root, 'tags-other')}:x`,
    );
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(
      `  tags:     ${out}, oci:${join(root, 'tags')}:v2, oci:${join(root, 'tags-other')}:x`,
    );
    const bare = await buildHello(out, app, '--tag', 'example.test/app:v3');
    expect(bare.code).toBe(1);
    expect(bare.err).toContain(
      `error: --tag example.test/app:v3: IMAGE ${out} is an OCI layout, and a bare --tag without --publish would go to the default local layout instead`,
    );
    expect(bare.err).toContain(
      `hint: give the tag as a layout location (e.g. --tag oci:${join(root, 'tags')}:v2`,
    );
  });

  it("names the run image in its errors, in build's flag names, and says when a name was read as Docker Hub", async () => {
    const app = await makeApp('named', { 'app.txt': 'x\n' });
    const missing = await runCli(
      'build',
      `oci:${join(root, 'named')}:x`,
      '--path',
      app,
      '--buildpack',
      helloBp,
      '--run-image',
      `${registry.host}/run:nope`,
    );
    expect(missing.code).toBe(1);
    expect(missing.err).toContain(`run image ${registry.host}/run:nope`);
    expect(missing.err).toContain('--run-image');
    expect(missing.err).not.toMatch(/(^|\s)-run-image/);
    const hub = await runCli(
      'build',
      `oci:${join(root, 'named')}:x`,
      '--path',
      app,
      '--buildpack',
      helloBp,
      '--run-image',
      'localhost5077/run:v1',
      '--pull-policy',
      'never',
    );
    expect(hub.code).toBe(1);
    expect(hub.err).toContain(
      '"localhost5077/run:v1" was read as docker.io/localhost5077/run:v1 (Docker Hub)',
    );
    const builder = await runCli(
      'build',
      `oci:${join(root, 'named')}:x`,
      '--path',
      app,
      '--builder',
      `oci:${join(root, 'no-builder')}:b`,
    );
    expect(builder.err).toContain(
      `error: builder oci:${join(root, 'no-builder')}:b: ${join(root, 'no-builder')} is not an OCI image layout`,
    );
    const hubBuilder = await runCli(
      'build',
      `oci:${join(root, 'named')}:x`,
      '--path',
      app,
      '--builder',
      'myorg/builder:1',
      '--pull-policy',
      'never',
    );
    expect(hubBuilder.err).toContain('error: builder myorg/builder:1: not in the local layout');
    expect(hubBuilder.err).toContain('"myorg/builder:1" was read as docker.io/myorg/builder:1 (Docker Hub)');
  });

  it('rebase of a registry image without --publish says that --publish is needed', async () => {
    const r = await runCli('rebase', `${registry.host}/app:latest`, '--run-image', runRef);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`error: ${registry.host}/app:latest is not in the local layout oci:`);
    expect(r.err).toContain(
      `hint: to rebase it in its registry, add --publish: packfarm rebase ${registry.host}/app:latest --publish`,
    );
  });

  it('names an oci: --cache-image that is a regular file, and leaves the file alone', async () => {
    const app = await makeApp('cache-file', { 'app.txt': 'x\n' });
    const file = join(root, 'cache.tar');
    await writeFile(file, 'not a layout');
    const r = await buildHello(
      `oci:${join(root, 'cache-file-img')}:x`,
      app,
      '--cache-image',
      `oci:${file}:cache`,
    );
    expect(r.code).toBe(1);
    expect(r.err).toContain(`error: oci:${file} is a file, not an OCI image layout directory`);
    expect(r.err).not.toMatch(/internal error|ENOTDIR/);
    expect(await readFile(file, 'utf8')).toBe('not a layout');
  });

  it('names a missing buildpack directory', async () => {
    const app = await makeApp('err2', { 'app.txt': 'x\n' });
    const r = await runCli(
      'build',
      `oci:${join(root, 'err')}:x`,
      '--path',
      app,
      '--buildpack',
      './nope/',
      '--run-image',
      runRef,
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toMatch(/--buildpack \.\/nope\/: no such directory or archive/);
  });
});
