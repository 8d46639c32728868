import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildReport } from '../../src/api/build.js';
import { writeLayer } from '../../src/archive/index.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { publishIndex } from '../../src/image/publish-index.js';
import type { ImageStore } from '../../src/image/store.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import type { Platform } from '../../src/oci/platform.js';
import { canonicalJson } from '../../src/util/json.js';
import { writeBusyboxBuildImage } from '../helpers/build-image.js';
import { registryStore, runCli, usePackfarmHome } from '../helpers/cli.js';
import { busyboxFor } from '../helpers/debian-packages.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner, createRunImage } from '../helpers/run-image.js';

/**
 * Buildpackages named where a build names buildpacks: `--buildpack docker://REF`, `--buildpack oci:DIR:TAG`,
 * `--buildpack FILE.cnb`, and project.toml uris (schema 0.2 `[[io.buildpacks.group]]`, schema 0.1
 * `[[build.buildpacks]]`). The packages are made by `packfarm buildpack package` and pushed to a real
 * registry (or written to a layout / .cnb file); the builds are real, and podman runs what they made.
 *
 * `test/flavour` 1.0.0 exists twice, with the same id and version but a different `flavour` file: one
 * package per architecture, joined into one index here. What each image prints tells which child its target
 * read: amd64 must run the amd64 child's buildpack, arm64 (emulated, in its busybox build image) the arm64
 * one's — also through the composite `test/flavour-meta`, whose package holds each target's child.
 */
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };
const ARM64: Platform = { os: 'linux', architecture: 'arm64' };

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let reg: string;
let restoreHome: (() => void) | undefined;
const packfarm = runCli;

async function ok(...argv: string[]): Promise<string> {
  const r = await packfarm(...argv);
  if (r.code !== 0) throw new Error(`packfarm ${argv.join(' ')} failed (${r.code}):\n${r.err}\n${r.out}`);
  return r.out;
}

const store = (repo: string): ImageStore => registryStore(registry, repo);

const insecure = () => ['--insecure-registry', reg];

/** An app build (host executor unless `extra` gives a build image), published; the report. */
async function build(image: string, app: string, ...extra: string[]): Promise<BuildReport> {
  const out = await ok(
    'build',
    image,
    '--path',
    app,
    '--run-image',
    `${reg}/run:1`,
    '--publish',
    ...insecure(),
    '--json',
    ...extra,
  );
  return JSON.parse(out) as BuildReport;
}

async function ran(image: string, arch: string): Promise<string> {
  const r = await podman.run(image, { flags: ['--arch', arch] });
  expect(r.exitCode, r.stderr).toBe(0);
  return r.stdout;
}

async function writeFlavourBuildpack(dir: string, flavour: string): Promise<void> {
  await mkdir(join(dir, 'bin'), { recursive: true });
  await writeFile(
    join(dir, 'buildpack.toml'),
    'api = "0.12"\n[buildpack]\nid = "test/flavour"\nversion = "1.0.0"\n[[targets]]\nos = "linux"\n',
  );
  await writeFile(join(dir, 'flavour'), `${flavour}\n`);
  await writeFile(join(dir, 'bin', 'detect'), '#!/bin/sh\nexit 0\n');
  await writeFile(
    join(dir, 'bin', 'build'),
    `#!/bin/sh
set -eu
L="$CNB_LAYERS_DIR/flavour"
mkdir -p "$L/bin"
echo "flavour=$(cat "$CNB_BUILDPACK_DIR/flavour") built-on=$(uname -m) target=$CNB_TARGET_ARCH" > "$L/flavour.txt"
cat > "$L/bin/report" <<'SH'
#!/bin/sh
cat "$(dirname "$0")/../flavour.txt"
SH
chmod 755 "$L/bin/report"
printf '[types]\\nlaunch = true\\n' > "$L.toml"
printf '[[processes]]\\ntype = "web"\\ncommand = ["report"]\\ndefault = true\\n' > "$CNB_LAYERS_DIR/launch.toml"
`,
  );
  await chmod(join(dir, 'bin', 'detect'), 0o755);
  await chmod(join(dir, 'bin', 'build'), 0o755);
}

async function makeApp(name: string, files: Record<string, string> = {}): Promise<string> {
  const dir = join(root, 'apps', name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'app.txt'), `${name}\n`);
  for (const [rel, text] of Object.entries(files)) await writeFile(join(dir, rel), text);
  return dir;
}

/**
 * An image in layout `dir` (tag `latest`) with the buildpackage labels over one layer made from `tree`: for
 * the "bad layers" cases. `lie.label` overrides the label's layerDiffID; `lie.both` the config's diff_id too.
 */
async function writeFakePackage(
  dir: string,
  tree: string,
  lie: { label?: string; both?: string } = {},
): Promise<void> {
  const s = await openLayoutStore(dir, { create: true });
  const file = join(root, `layer-${Math.random().toString(36).slice(2)}.tgz`);
  const layer = await writeLayer({ dir: tree, out: file });
  const gz = await readFile(file);
  await s.putBlob({ digest: layer.digest, size: layer.size, open: () => Readable.from([gz]) });
  const labels = {
    'io.buildpacks.buildpackage.metadata': JSON.stringify({ id: 'test/broken', version: '1' }),
    'io.buildpacks.buildpack.layers': JSON.stringify({
      'test/broken': { '1': { api: '0.12', layerDiffID: lie.label ?? lie.both ?? layer.diffId } },
    }),
  };
  const cfg = Buffer.from(
    canonicalJson({
      os: 'linux',
      architecture: 'amd64',
      config: { Labels: labels },
      rootfs: { type: 'layers', diff_ids: [lie.both ?? layer.diffId] },
    }),
  );
  await s.putBlob({ digest: sha256Digest(cfg), size: cfg.length, open: () => Readable.from([cfg]) });
  const manifest = Buffer.from(
    canonicalJson({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, digest: sha256Digest(cfg), size: cfg.length },
      layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size }],
    }),
  );
  await s.putManifest({ bytes: manifest, mediaType: MediaType.ociManifest, tag: 'latest' });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-bpuri-'));
  restoreHome = usePackfarmHome(join(root, 'home'));
  registry = await startRegistry({ proxy: false });
  reg = registry.host;
  podman = await createPodmanRunner();

  // Run image and build image indexes: busybox of each architecture.
  const run = store('run');
  const builds = store('build');
  const runImages = [];
  const buildImages = [];
  for (const p of [AMD64, ARM64]) {
    const busyboxPath = await busyboxFor(p.architecture);
    runImages.push(
      await createRunImage({ store: run, tag: `1-${p.architecture}`, platform: p, busyboxPath }),
    );
    buildImages.push(
      await writeBusyboxBuildImage({ store: builds, tag: `1-${p.architecture}`, platform: p }),
    );
  }
  await publishIndex({ store: run, images: runImages.map((i) => i.digest), tags: ['1'] });
  await publishIndex({ store: builds, images: buildImages.map((i) => i.digest), tags: ['1'] });

  // test/flavour 1.0.0 per architecture, packaged by `buildpack package`, joined into one index.
  const digests: string[] = [];
  for (const arch of ['amd64', 'arm64']) {
    await writeFlavourBuildpack(join(root, `flavour-${arch}`), `${arch}-child`);
    await writeFile(join(root, `flavour-${arch}.toml`), `[buildpack]\nuri = "flavour-${arch}"\n`);
    const out = await ok(
      'buildpack',
      'package',
      `${reg}/flavour:${arch}`,
      '--config',
      join(root, `flavour-${arch}.toml`),
      '--target',
      `linux/${arch}`,
      '--publish',
      ...insecure(),
      '--json',
    );
    digests.push((JSON.parse(out) as { digest: string }).digest);
  }
  await publishIndex({ store: store('flavour'), images: digests as `sha256:${string}`[], tags: ['1'] });
  // The amd64 one also as a layout and as a .cnb file.
  await ok(
    'buildpack',
    'package',
    `oci:${join(root, 'pkgs', 'flavour')}:amd64`,
    '--config',
    join(root, 'flavour-amd64.toml'),
    '--target',
    'linux/amd64',
  );
  await ok(
    'buildpack',
    'package',
    join(root, 'flavour-amd64.cnb'),
    '--config',
    join(root, 'flavour-amd64.toml'),
    '--target',
    'linux/amd64',
    '--format',
    'file',
  );

  // The composite test/flavour-meta 2.0.0, its dependency the flavour index: each child holds its own.
  await mkdir(join(root, 'meta'), { recursive: true });
  await writeFile(
    join(root, 'meta', 'buildpack.toml'),
    'api = "0.12"\n[buildpack]\nid = "test/flavour-meta"\nversion = "2.0.0"\n[[order]]\n[[order.group]]\nid = "test/flavour"\nversion = "1.0.0"\n',
  );
  await writeFile(
    join(root, 'meta.toml'),
    `[buildpack]\nuri = "meta"\n[[dependencies]]\nimage = "${reg}/flavour:1"\n[[targets]]\nos = "linux"\narch = "amd64"\n[[targets]]\nos = "linux"\narch = "arm64"\n`,
  );
  await ok(
    'buildpack',
    'package',
    `${reg}/flavour-meta:2`,
    '--config',
    join(root, 'meta.toml'),
    '--publish',
    ...insecure(),
  );
}, 600_000);

afterAll(async () => {
  restoreHome?.();
  await podman?.cleanup();
  await registry?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('buildpackages as build buildpacks (docker://, oci:, .cnb, project.toml)', () => {
  it('--buildpack docker://INDEX on two platforms: each target runs its own child (arm64 emulated)', async () => {
    const app = await makeApp('two');
    const image = `${reg}/app-two:latest`;
    const report = await build(
      image,
      app,
      '--buildpack',
      `docker://${reg}/flavour:1`,
      '--build-image',
      `${reg}/build:1`,
      '--platform',
      'linux/amd64,linux/arm64',
    );
    expect(report.targets.map((t) => [t.platform, t.runs, t.executor])).toEqual([
      ['linux/amd64', 'native', 'oci'],
      ['linux/arm64', 'emulated', 'oci'],
    ]);
    expect(await ran(image, 'amd64')).toContain('flavour=amd64-child built-on=x86_64 target=amd64');
    expect(await ran(image, 'arm64')).toContain('flavour=arm64-child built-on=aarch64 target=arm64');
  }, 900_000);

  it('--buildpack oci:DIR:TAG and FILE.cnb build exactly what the buildpack directory builds', async () => {
    const app = await makeApp('same');
    const fromDir = await build(`${reg}/app-same:dir`, app, '--buildpack', join(root, 'flavour-amd64'));
    const fromLayout = await build(
      `${reg}/app-same:oci`,
      app,
      '--buildpack',
      `oci:${join(root, 'pkgs', 'flavour')}:amd64`,
    );
    const fromFile = await build(`${reg}/app-same:cnb`, app, '--buildpack', join(root, 'flavour-amd64.cnb'));
    expect(await ran(`${reg}/app-same:oci`, 'amd64')).toContain('flavour=amd64-child built-on=x86_64');
    expect(fromLayout.digest).toBe(fromDir.digest);
    expect(fromFile.digest).toBe(fromDir.digest);
  }, 900_000);

  it('project.toml 0.2 [[io.buildpacks.group]] uri = "oci:…" (relative, a composite)', async () => {
    const app = await makeApp('project-v2', {
      'project.toml': '[_]\nschema-version = "0.2"\n[[io.buildpacks.group]]\nuri = "oci:../../pkgs/meta:2"\n',
    });
    await ok(
      'buildpack',
      'package',
      `oci:${join(root, 'pkgs', 'meta')}:2`,
      '--config',
      join(root, 'meta.toml'),
      '--target',
      'linux/amd64',
      ...insecure(),
    );
    const image = `${reg}/app-project-v2:latest`;
    const report = await build(image, app, '--platform', 'linux/amd64');
    expect(report.targets.map((t) => t.platform)).toEqual(['linux/amd64']);
    expect(await ran(image, 'amd64')).toContain('flavour=amd64-child built-on=x86_64 target=amd64');
  }, 900_000);

  it('project.toml 0.1 [[build.buildpacks]] uri = "docker://…" (a composite index) on two platforms', async () => {
    const app = await makeApp('project-v1', {
      'project.toml': `[project]\nid = "v1"\n[[build.buildpacks]]\nuri = "docker://${reg}/flavour-meta:2"\n`,
    });
    const image = `${reg}/app-project-v1:latest`;
    await build(image, app, '--build-image', `${reg}/build:1`, '--platform', 'linux/amd64,linux/arm64');
    expect(await ran(image, 'amd64')).toContain('flavour=amd64-child built-on=x86_64 target=amd64');
    expect(await ran(image, 'arm64')).toContain('flavour=arm64-child built-on=aarch64 target=arm64');
  }, 900_000);

  it('a builder.toml directory naming docker:// reads each target’s child; --buildpack ID@VERSION takes the builder’s', async () => {
    const dir = join(root, 'builder-dir');
    await mkdir(dir, { recursive: true });
    await writeFile(
      join(dir, 'builder.toml'),
      `[[buildpacks]]
uri = "docker://${reg}/flavour:1"
[[order]]
[[order.group]]
id = "test/flavour"
[build]
image = "${reg}/build:1"
[run]
[[run.images]]
image = "${reg}/run:1"
[[targets]]
os = "linux"
arch = "amd64"
[[targets]]
os = "linux"
arch = "arm64"
`,
    );
    const app = await makeApp('builder-dir');
    const image = `${reg}/app-builder-dir:latest`;
    // No --platform: the builder's [[targets]].
    const report = await build(image, app, '--builder', dir, '--buildpack', 'test/flavour@1.0.0');
    expect(report.targets.map((t) => t.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    expect(await ran(image, 'amd64')).toContain('flavour=amd64-child built-on=x86_64 target=amd64');
    expect(await ran(image, 'arm64')).toContain('flavour=arm64-child built-on=aarch64 target=arm64');

    const r = await packfarm(
      'build',
      `${reg}/app-builder-dir:bad`,
      '--path',
      app,
      '--builder',
      dir,
      '--buildpack',
      'test/flavour@9.9.9',
      ...insecure(),
      '--publish',
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(
      `--buildpack test/flavour@9.9.9: builder ${dir} has no buildpack test/flavour@9.9.9`,
    );
  }, 900_000);

  it('names the flag or file and the uri when a buildpackage cannot be used', async () => {
    const app = await makeApp('errors');
    const fail = async (...extra: string[]) => {
      const r = await packfarm(
        'build',
        `${reg}/app-errors:latest`,
        '--path',
        app,
        '--run-image',
        `${reg}/run:1`,
        '--publish',
        ...insecure(),
        ...extra,
      );
      expect(r.code, r.out).not.toBe(0);
      return r.err;
    };
    expect(await fail('--buildpack', `docker://${reg}/nothing:1`)).toContain(
      `--buildpack docker://${reg}/nothing:1: buildpackage ${reg}/nothing:1: no such image`,
    );
    expect(await fail('--buildpack', `docker://${reg}/run:1`)).toMatch(
      new RegExp(
        `--buildpack docker://${reg}/run:1: buildpackage .*run:1: no io\\.buildpacks\\.buildpackage\\.metadata label: not a buildpackage`,
      ),
    );
    expect(
      await fail(
        '--buildpack',
        `oci:${join(root, 'pkgs', 'flavour')}:amd64`,
        '--build-image',
        `${reg}/build:1`,
        '--platform',
        'linux/arm64',
      ),
    ).toMatch(/--buildpack oci:.*flavour:amd64: buildpackage .*: no buildpackage for linux\/arm64/);
    expect(await fail('--buildpack', join(root, 'missing.cnb'))).toContain(
      `--buildpack ${join(root, 'missing.cnb')}: ${join(root, 'missing.cnb')} does not exist`,
    );
    expect(await fail('--buildpack', 'urn:cnb:registry:example/bp@1')).toContain(
      '--buildpack urn:cnb:registry:example/bp@1: the buildpack registry (urn:cnb:registry:) is not supported',
    );

    // Bad layers: a label naming a layer the image lacks; a layer without the buildpack it should hold.
    const tree = join(root, 'broken-tree');
    await mkdir(join(tree, 'cnb', 'buildpacks', 'test_broken', '1'), { recursive: true });
    await writeFile(join(tree, 'cnb', 'buildpacks', 'test_broken', '1', 'README'), 'no buildpack.toml\n');
    await writeFakePackage(join(root, 'broken-diff'), tree, { label: `sha256:${'0'.repeat(64)}` });
    expect(await fail('--buildpack', `oci:${join(root, 'broken-diff')}:latest`)).toMatch(
      /--buildpack oci:.*broken-diff:latest: buildpackage .*: label io\.buildpacks\.buildpack\.layers: test\/broken@1: layer sha256:0{64} is not in the image/,
    );
    await writeFakePackage(join(root, 'broken-content'), tree, { both: `sha256:${'1'.repeat(64)}` });
    expect(await fail('--buildpack', `oci:${join(root, 'broken-content')}:latest`)).toMatch(
      /--buildpack oci:.*broken-content:latest: buildpackage .*: test\/broken@1: layer sha256:[0-9a-f]{64} holds sha256:[0-9a-f]{64}, but label io\.buildpacks\.buildpack\.layers says sha256:1{64}/,
    );
    await writeFakePackage(join(root, 'broken-layer'), tree);
    expect(await fail('--buildpack', `oci:${join(root, 'broken-layer')}:latest`)).toMatch(
      /--buildpack oci:.*broken-layer:latest: buildpackage .*: test\/broken@1: its layer sha256:[0-9a-f]{64} has no readable \/cnb\/buildpacks\/test_broken\/1\/buildpack\.toml/,
    );

    // In project.toml the error names the file and the uri.
    const projectApp = await makeApp('errors-project', {
      'project.toml': `[_]\nschema-version = "0.2"\n[[io.buildpacks.group]]\nuri = "docker://${reg}/nothing:2"\n`,
    });
    const r = await packfarm(
      'build',
      `${reg}/app-errors:latest`,
      '--path',
      projectApp,
      '--run-image',
      `${reg}/run:1`,
      '--publish',
      ...insecure(),
    );
    expect(r.code).not.toBe(0);
    expect(r.err).toContain(
      `${join(projectApp, 'project.toml')} buildpack docker://${reg}/nothing:2: buildpackage ${reg}/nothing:2: no such image`,
    );
    // Nothing was published under the tag by any of the failed builds.
    expect(await store('app-errors').resolve('latest')).toBeUndefined();
  }, 900_000);
});
