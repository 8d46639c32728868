import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type BuildOptions, type BuildReport, build } from '../../src/api/build.js';
import type { BuildEvent } from '../../src/api/events.js';
import { defaultBuilderLocation, platformSlug } from '../../src/builder/default-builder.js';
import { packageBuildpack } from '../../src/builder/package.js';
import { buildOnFarm } from '../../src/farm/build.js';
import type { FarmNodeConfig } from '../../src/farm/config.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { publishIndex } from '../../src/image/publish-index.js';
import { createRegistryStore } from '../../src/image/registry-store.js';
import { digestHex } from '../../src/oci/digest.js';
import type { Platform } from '../../src/oci/platform.js';
import { parseReference } from '../../src/oci/reference.js';
import { isPackfarmError } from '../../src/util/errors.js';
import { usePackfarmHome } from '../helpers/cli.js';
import { writeBuilderIndex } from '../helpers/builder-index.js';
import { writeBusyboxBuildImage } from '../helpers/build-image.js';
import { compileSrcForChildProcesses } from '../helpers/compiled-src.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner, createRunImage } from '../helpers/run-image.js';
import { type SshFarm, startSshNodes } from '../helpers/ssh-nodes.js';

/**
 * Images, builder dirs and a --cache-dir that exist only on the coordinator, used by real SSH nodes (two
 * OpenSSH servers on 127.0.0.8–9 running this checkout's packfarm): they travel as blobs (have/want), the
 * nodes lay them out in their data dirs, and a second build sends none of them again.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const probeBp = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'farm', 'farm_probe', '1.0.0');
const cacheBp = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'cache', 'test_cache-user', '1.0.0');
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };
const ARM64: Platform = { os: 'linux', architecture: 'arm64' };

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let ssh: SshFarm;
let compiled: { dir: string; cleanup: () => Promise<void> };
let runRef: string;
let restoreHome: (() => void) | undefined;

const node = (i: number, extra: Partial<FarmNodeConfig> = {}): FarmNodeConfig => ({
  ...ssh.nodes[i]!.config,
  ...extra,
});
const store = (repo: string) =>
  createRegistryStore(parseReference(`${registry.host}/${repo}`), { insecureRegistries: [registry.host] });

async function makeApp(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, 'apps', name);
  await mkdir(dir, { recursive: true });
  for (const [rel, text] of Object.entries(files)) await writeFile(join(dir, rel), text);
  return dir;
}

async function farmBuild(
  options: BuildOptions,
  nodes: FarmNodeConfig[],
): Promise<{ report: BuildReport; events: BuildEvent[] }> {
  const events: BuildEvent[] = [];
  const report = await buildOnFarm(
    { insecureRegistries: [registry.host], publish: true, ...options },
    { nodes, onEvent: (e) => events.push(e) },
  );
  return { report, events };
}

const output = (events: BuildEvent[], target: string) =>
  events.flatMap((e) => (e.type === 'output' && e.target === target ? [e.line] : []));

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-farm-local-'));
  restoreHome = usePackfarmHome(join(root, 'coordinator'));
  compiled = await compileSrcForChildProcesses();
  const entry = join(compiled.dir, 'packfarm.mjs');
  await writeFile(
    entry,
    "import { main } from './cli/main.js';\nprocess.exitCode = await main(process.argv.slice(2));\n",
  );
  ssh = await startSshNodes({ dir: join(root, 'ssh'), count: 2, entry, firstAddress: 8 });
  registry = await startRegistry();
  podman = await createPodmanRunner();
  const images = [];
  for (const p of [AMD64, ARM64])
    images.push(await createRunImage({ store: store('run'), tag: `1-${p.architecture}`, platform: p }));
  await publishIndex({ store: store('run'), images: images.map((i) => i.digest), tags: ['1'] });
  runRef = `${registry.host}/run:1`;
}, 600_000);

afterAll(async () => {
  restoreHome?.();
  await ssh?.stop();
  await podman?.cleanup();
  await registry?.stop();
  await compiled?.cleanup();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('an oci: builder that only the coordinator has', () => {
  let layout: string;
  let app: string;
  let first: BuildReport;

  it('builds amd64 and arm64 on two nodes, each sent only its platform’s builder image', async () => {
    layout = join(root, 'builder-layout');
    await writeBuilderIndex({
      builder: await openLayoutStore(layout, { create: true }),
      run: store('run-b'),
      runRef: `${registry.host}/run-b:1`,
      tag: '1',
      platforms: [AMD64, ARM64],
      buildpack: { dir: probeBp, id: 'farm/probe', version: '1.0.0' },
      workDir: join(root, 'builder-work'),
    });
    app = await makeApp('oci-builder', { 'app.txt': 'builder\n' });
    const { report, events } = await farmBuild(
      {
        image: `${registry.host}/b-app:latest`,
        path: app,
        builder: `oci:${layout}:1`,
        platforms: ['linux/amd64,linux/arm64'],
      },
      [node(0, { platforms: ['linux/amd64'] }), node(1, { platforms: ['linux/arm64'] })],
    );
    first = report;
    expect(report.targets.map((t) => [t.platform, t.executor, t.farm?.node])).toEqual([
      ['linux/amd64', 'oci', 'node1'],
      ['linux/arm64', 'oci', 'node2'],
    ]);
    expect(output(events, 'linux/arm64')).toContain('probe: building for linux/arm64 app=builder');

    // Each node got the builder's child for its own platform (manifest, config, layers), nothing of the other.
    const builderLayout = await openLayoutStore(layout);
    const index = JSON.parse((await builderLayout.getManifest('1')).bytes.toString('utf8')) as {
      manifests: Array<{ digest: `sha256:${string}`; platform: { architecture: string } }>;
    };
    for (const [i, arch] of [
      [0, 'amd64'],
      [1, 'arm64'],
    ] as const) {
      const child = index.manifests.find((m) => m.platform.architecture === arch)!;
      const images = await readdir(join(ssh.nodes[i]!.dataDir, 'farm', 'images'));
      expect(images.filter((n) => !n.startsWith('packfarm-'))).toEqual([digestHex(child.digest)]);
      const m = JSON.parse((await builderLayout.getManifest(child.digest)).bytes.toString('utf8')) as {
        layers: Array<{ size: number }>;
      };
      const t = report.targets[i]!;
      // the app (one blob or more: it travels as pieces) + manifest + config + every layer of that child
      expect(t.farm?.blobsSent).toBeGreaterThanOrEqual(3 + m.layers.length);
      expect(t.farm?.bytesSent).toBeGreaterThan(m.layers.reduce((a, l) => a + l.size, 0));
    }
    for (const arch of ['amd64', 'arm64']) {
      const run = await podman.run(`${registry.host}/b-app:latest`, { flags: ['--arch', arch] });
      expect(run.stdout).toContain(`target=linux/${arch} app=builder`);
    }
  }, 600_000);

  it('a second build sends no builder blob: only the job message goes to each node', async () => {
    const { report } = await farmBuild(
      {
        image: `${registry.host}/b-app:latest`,
        path: app,
        builder: `oci:${layout}:1`,
        platforms: ['linux/amd64,linux/arm64'],
      },
      [node(0, { platforms: ['linux/amd64'] }), node(1, { platforms: ['linux/arm64'] })],
    );
    expect(report.digest).toBe(first.digest);
    for (const [i, t] of report.targets.entries()) {
      expect(t.farm?.blobsSent).toBe(0);
      expect(t.farm?.bytesSent).toBeLessThan(16 * 1024);
      expect(first.targets[i]!.farm!.bytesSent - t.farm!.bytesSent).toBeGreaterThan(100 * 1024);
    }
  }, 600_000);
});

describe('the default builder', () => {
  it('nothing names buildpacks: the node builds with the coordinator’s default builder, sent from here', async () => {
    // The coordinator's default builder for linux/amd64, made ahead as packfarm would (that platform's tag in
    // the builder layout + its ready marker),
    // from the small test builder instead of builders/default (whose first build takes minutes).
    const where = await defaultBuilderLocation({ env: process.env });
    await writeBuilderIndex({
      builder: await openLayoutStore(where.builderLayout, { create: true }),
      run: store('run-d'),
      runRef: `${registry.host}/run-d:${platformSlug(AMD64)}`,
      tag: platformSlug(AMD64),
      platforms: [AMD64],
      buildpack: { dir: probeBp, id: 'farm/probe', version: '1.0.0' },
      workDir: join(root, 'default-work'),
    });
    await writeFile(join(where.home, `ready-${platformSlug(AMD64)}`), 'test\n');
    const reference = `oci:${where.builderLayout}:${platformSlug(AMD64)}`;
    const app = await makeApp('default-builder', { 'app.txt': 'default\n' });
    const { report } = await farmBuild(
      { image: `${registry.host}/d-app:latest`, path: app, platform: 'linux/amd64' },
      [node(1)],
    );
    const t = report.targets[0]!;
    expect([t.farm?.node, t.executor, t.buildImage?.reference]).toEqual(['node2', 'oci', reference]);
    // app + the builder child's manifest and config at least (its layers may be on node2 from other builds)
    expect(t.farm?.blobsSent).toBeGreaterThanOrEqual(3);
    const images = await readdir(join(ssh.nodes[1]!.dataDir, 'farm', 'images'));
    expect(images).toContain(digestHex(t.buildImage!.digest));
    // The node made no default builder of its own.
    expect(await readdir(ssh.nodes[1]!.dataDir)).not.toContain('default-builder');
    const run = await podman.run(`${registry.host}/d-app:latest`);
    expect(run.stdout).toContain('target=linux/amd64 app=default');
  }, 600_000);
});

describe('a builder.toml dir with a local build image', () => {
  it('runs on a remote node in the build image sent from here; the same definition is sent once', async () => {
    const buildLayout = join(root, 'build-layout');
    const buildImage = await writeBusyboxBuildImage({
      store: await openLayoutStore(buildLayout, { create: true }),
      tag: 'build',
      platform: AMD64,
    });
    const def = join(root, 'builder-def');
    await mkdir(def, { recursive: true });
    await writeFile(
      join(def, 'builder.toml'),
      [
        '[[buildpacks]]',
        `uri = ${JSON.stringify(probeBp)}`,
        '',
        '[[order]]',
        '[[order.group]]',
        'id = "farm/probe"',
        '',
        '[build]',
        `image = ${JSON.stringify(`oci:${buildLayout}:build`)}`,
        '',
        '[[run.images]]',
        `image = ${JSON.stringify(runRef)}`,
        '',
      ].join('\n'),
    );
    const app = await makeApp('toml-builder', { 'app.txt': 'toml\n' });
    const opts: BuildOptions = {
      image: `${registry.host}/t-app:latest`,
      path: app,
      builder: def,
      platform: 'linux/amd64',
    };
    const { report, events } = await farmBuild(opts, [node(1)]);
    const t = report.targets[0]!;
    expect([t.farm?.node, t.executor, t.buildImage?.reference]).toEqual([
      'node2',
      'oci',
      `oci:${buildLayout}:build`,
    ]);
    expect(t.buildpacks).toEqual([{ id: 'farm/probe', version: '1.0.0' }]);
    // app + builder dir + the build image's manifest and config (its busybox layer may be on node2 already:
    // the builders of earlier tests have the same base layer)
    expect(t.farm?.blobsSent).toBeGreaterThanOrEqual(4);
    expect(await readdir(join(ssh.nodes[1]!.dataDir, 'farm', 'images'))).toContain(
      digestHex(buildImage.digest),
    );
    expect(output(events, 'linux/amd64')).toContain('probe: building for linux/amd64 app=toml');
    const run = await podman.run(`${registry.host}/t-app:latest`);
    expect(run.stdout).toContain('target=linux/amd64 app=toml');

    const again = await farmBuild(opts, [node(1)]);
    expect(again.report.targets[0]?.farm?.blobsSent).toBe(0);
    expect(again.report.digest).toBe(report.digest);
    expect(await readdir(join(ssh.nodes[1]!.dataDir, 'farm', 'builders'))).toHaveLength(1);
  }, 600_000);
});

describe('a run image that only the coordinator has, registry output', () => {
  it('the node pushes the run image’s layers itself; the image is the one a local build makes', async () => {
    const runLayout = join(root, 'run-layout');
    const runImage = await createRunImage({
      store: await openLayoutStore(runLayout, { create: true }),
      tag: 'v1',
      platform: AMD64,
    });
    const app = await makeApp('oci-run', { 'app.txt': 'run\n' });
    const opts: BuildOptions = {
      image: `${registry.host}/r-app:latest`,
      path: app,
      buildpacks: [probeBp],
      runImage: `oci:${runLayout}:v1`,
      platform: 'linux/amd64',
    };
    const { report } = await farmBuild(opts, [node(0)]);
    const t = report.targets[0]!;
    expect(t.farm?.node).toBe('node1');
    // The run image's name recorded in the image is the coordinator's, not the node's copy.
    expect(t.runImage.reference).toBe(`oci:${runLayout}@${runImage.digest}`);
    const pushed = await store('r-app').getManifest(t.digest);
    const layers = (JSON.parse(pushed.bytes.toString('utf8')) as { layers: Array<{ digest: string }> })
      .layers;
    for (const l of runImage.layers) expect(layers.map((x) => x.digest)).toContain(l.digest);
    for (const l of layers) expect(await store('r-app').hasBlob(l.digest as `sha256:${string}`)).toBe(true);
    const run = await podman.run(`${registry.host}/r-app:latest`);
    expect(run.stdout).toContain('target=linux/amd64 app=run');

    // The same build on this machine alone gives the same image.
    const local = await build(
      {
        ...opts,
        image: `${registry.host}/r-app-local:latest`,
        insecureRegistries: [registry.host],
        publish: true,
      },
      {},
    );
    expect(local.digest).toBe(report.digest);
  }, 600_000);
});

describe('--cache-dir through remote nodes', () => {
  it('the node’s new cache comes back into the cache dir; a build on another node restores from it', async () => {
    const app = await makeApp('cache', { 'app.txt': 'cache\n' });
    const cacheDir = join(root, 'cache-dir');
    const opts: BuildOptions = {
      image: `${registry.host}/c-app:latest`,
      path: app,
      buildpacks: [cacheBp],
      runImage: runRef,
      cacheDir,
      platform: 'linux/amd64',
    };
    const one = await farmBuild(opts, [node(0)]);
    expect(one.report.targets[0]?.farm?.node).toBe('node1');
    expect(output(one.events, 'linux/amd64')).toContain('deps: building version 1');
    const committed = join(cacheDir, 'linux-amd64', 'committed');
    const files = (await readdir(committed)).sort();
    const tars = files.filter((f) => /^sha256:[0-9a-f]{64}\.tar$/.test(f));
    expect(tars).toHaveLength(1);
    expect(files).toContain('io.buildpacks.lifecycle.cache.metadata');
    const meta = await readFile(join(committed, 'io.buildpacks.lifecycle.cache.metadata'), 'utf8');
    expect(meta).toContain(tars[0]!.slice(0, -4));
    expect(await readdir(join(cacheDir, 'linux-amd64'))).toEqual(['committed']);
    expect(one.report.targets[0]?.farm?.blobsReceived).toBe(1);

    // Another node, which has never seen this app: the cache layer goes there from the coordinator.
    const two = await farmBuild(opts, [node(1)]);
    expect(two.report.targets[0]?.farm?.node).toBe('node2');
    expect(output(two.events, 'linux/amd64')).toContain('deps: reusing cached version 1');
    // the app (as pieces), the buildpack and the cache layer, which node2 now holds
    expect(two.report.targets[0]?.farm?.blobsSent).toBeGreaterThanOrEqual(3);
    const layerHex = tars[0]!.slice('sha256:'.length, -'.tar'.length);
    expect(await readdir(join(ssh.nodes[1]!.dataDir, 'farm', 'blobs', 'sha256'))).toContain(layerHex);
    // The unchanged layer is not sent back; the cache dir still holds it.
    expect(two.report.targets[0]?.farm?.blobsReceived).toBe(0);
    expect((await readdir(committed)).filter((f) => f.endsWith('.tar'))).toEqual(tars);

    // Back on the first node: it kept the layer it made (in its blob cache), so nothing is sent at all.
    const three = await farmBuild(opts, [node(0)]);
    expect(output(three.events, 'linux/amd64')).toContain('deps: reusing cached version 1');
    expect(three.report.targets[0]?.farm?.blobsSent).toBe(0);
  }, 600_000);

  it('a cache image in a layout of this machine is refused for remote nodes, naming the flag', async () => {
    const app = await makeApp('cache-image', { 'app.txt': 'cache image\n' });
    let err: unknown;
    try {
      await farmBuild(
        {
          image: `${registry.host}/ci-app:latest`,
          path: app,
          buildpacks: [cacheBp],
          runImage: runRef,
          cacheImage: `oci:${join(root, 'cache-layout')}:cache`,
          platform: 'linux/amd64',
        },
        [node(0)],
      );
    } catch (e) {
      err = e;
    }
    expect(isPackfarmError(err, 'FARM_UNSUPPORTED')).toBe(true);
    expect((err as Error).message).toContain(`--cache-image oci:${join(root, 'cache-layout')}:cache`);
    expect(
      await store('ci-app')
        .listTags()
        .catch(() => []),
    ).toEqual([]);
  }, 120_000);
});

describe('buildpackages on the coordinator’s disk (--buildpack oci:…, FILE.cnb)', () => {
  let pkgDir: string;
  let cnb: string;
  beforeAll(async () => {
    const config = join(root, 'probe-package.toml');
    await writeFile(config, `[buildpack]\nuri = "${probeBp}"\n`);
    pkgDir = join(root, 'pkgs', 'probe');
    const scratchDir = join(root, 'pkg-scratch');
    await mkdir(scratchDir, { recursive: true });
    // An index of two platforms: a node building amd64 gets the amd64 child only.
    await packageBuildpack({
      name: `oci:${pkgDir}:1`,
      config,
      format: 'image',
      targets: ['linux/amd64', 'linux/arm64'],
      scratchDir,
    });
    cnb = join(root, 'probe-amd64.cnb');
    await packageBuildpack({ name: cnb, config, format: 'file', targets: ['linux/amd64'], scratchDir });
  }, 120_000);

  it('--buildpack oci:DIR:TAG: the node gets the target’s child only; a second build sends no blob of it', async () => {
    const app = await makeApp('bp-oci', { 'app.txt': 'bp-oci\n' });
    const options = {
      image: `${registry.host}/bp-oci:latest`,
      path: app,
      buildpacks: [`oci:${pkgDir}:1`],
      runImage: runRef,
      platforms: ['linux/amd64'],
    };
    const { report, events } = await farmBuild(options, [node(0)]);
    expect(report.targets[0]?.farm?.node).toBe('node1');
    expect(output(events, 'linux/amd64')).toContain('probe: building for linux/amd64 app=bp-oci');
    // Laid out on the node under the amd64 child's manifest digest; the arm64 child never went there.
    const top = await openLayoutStore(pkgDir);
    const children = JSON.parse((await top.getManifest('1')).bytes.toString('utf8')) as {
      manifests: Array<{ digest: string; platform: { architecture: string } }>;
    };
    const child = (arch: string) => children.manifests.find((m) => m.platform.architecture === arch)!.digest;
    const images = await readdir(join(ssh.nodes[0]!.dataDir, 'farm', 'images'));
    expect(images).toContain(digestHex(child('amd64') as `sha256:${string}`));
    expect(images).not.toContain(digestHex(child('arm64') as `sha256:${string}`));
    const blobs = await readdir(join(ssh.nodes[0]!.dataDir, 'farm', 'blobs', 'sha256'));
    expect(blobs).not.toContain(digestHex(child('arm64') as `sha256:${string}`));

    // The same build on the local node makes the same image; a second farm build sends nothing.
    const local = await farmBuild({ ...options, image: `${registry.host}/bp-oci-local:latest` }, [
      { name: 'local', uri: 'local' },
    ]);
    expect(local.report.digest).toBe(report.digest);
    const again = await farmBuild({ ...options, image: `${registry.host}/bp-oci-again:latest` }, [node(0)]);
    expect(again.report.digest).toBe(report.digest);
    expect(again.report.targets[0]?.farm?.blobsSent).toBe(0);
  }, 600_000);

  it('project.toml uri = "oci:…" (relative) and a .cnb: sent from here, the file in the app unchanged', async () => {
    const app = await makeApp('bp-project', { 'app.txt': 'bp-project\n' });
    const rel = relative(app, pkgDir);
    for (const uri of [`oci:${rel}:1`, relative(app, cnb)]) {
      await writeFile(
        join(app, 'project.toml'),
        `[_]\nschema-version = "0.2"\n[[io.buildpacks.group]]\nuri = "${uri}"\n`,
      );
      const options = {
        image: `${registry.host}/bp-project:latest`,
        path: app,
        runImage: runRef,
        platforms: ['linux/amd64'],
      };
      const { report, events } = await farmBuild(options, [node(0)]);
      expect(report.targets[0]?.farm?.node).toBe('node1');
      expect(output(events, 'linux/amd64')).toContain('probe: building for linux/amd64 app=bp-project');
      const local = await farmBuild({ ...options, image: `${registry.host}/bp-project-local:latest` }, [
        { name: 'local', uri: 'local' },
      ]);
      expect(local.report.digest, uri).toBe(report.digest);
    }
  }, 600_000);

  it('--buildpack FILE.cnb: unpacked here, sent as its image, built on the node', async () => {
    const app = await makeApp('bp-cnb', { 'app.txt': 'bp-cnb\n' });
    const { report, events } = await farmBuild(
      {
        image: `${registry.host}/bp-cnb:latest`,
        path: app,
        buildpacks: [cnb],
        runImage: runRef,
        platforms: ['linux/amd64'],
      },
      [node(1)],
    );
    expect(report.targets[0]?.farm?.node).toBe('node2');
    expect(report.targets[0]?.farm?.blobsSent).toBeGreaterThan(2);
    expect(output(events, 'linux/amd64')).toContain('probe: building for linux/amd64 app=bp-cnb');
    expect((await store('bp-cnb').resolve('latest'))?.digest).toBe(report.digest);
    const again = await farmBuild(
      {
        image: `${registry.host}/bp-cnb2:latest`,
        path: app,
        buildpacks: [cnb],
        runImage: runRef,
        platforms: ['linux/amd64'],
      },
      [node(1)],
    );
    expect(again.report.targets[0]?.farm?.blobsSent).toBe(0);
  }, 600_000);
});
