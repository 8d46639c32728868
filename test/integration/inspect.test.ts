import { execa } from 'execa';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseToml } from '../../src/util/toml.js';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishIndex } from '../../src/image/publish-index.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import type { ImageStore } from '../../src/image/store.js';
import { appImageLocation, openImage } from '../../src/image/transport.js';
import { type Platform, parsePlatform } from '../../src/oci/platform.js';
import { type ExportResult, exportImage } from '../../src/phase/export.js';
import { type AppInspectReport, inspectApp } from '../../src/api/inspect.js';
import type { BuildMetadata } from '../../src/platform/metadata.js';
import { registryStore, runCli, usePackfarmHome } from '../helpers/cli.js';
import { writeTestImage } from '../helpers/images.js';
import { type TestRegistry, freePort, startRegistry } from '../helpers/registry.js';
import { createRunImage } from '../helpers/run-image.js';

/**
 * `packfarm inspect` over real app images: exported by exportImage onto busybox run images, into a real
 * registry and into OCI layouts (the default local layout under PACKFARM_HOME, and oci:DIR), single images and
 * a two-platform index, plus images without CNB labels and with a broken label.
 */
const AMD64 = parsePlatform('linux/amd64');
const ARM64 = parsePlatform('linux/arm64');
const group = { group: [{ id: 'example/ruby', version: '1.0.0', api: '0.10' }] };
const metadata: BuildMetadata = {
  buildpacks: [{ id: 'example/ruby', version: '1.0.0', api: '0.10', homepage: 'https://example.com/ruby' }],
  extensions: [],
  processes: [
    {
      type: 'web',
      command: ['ruby'],
      args: ['app.rb', '--port', '8080'],
      direct: true,
      workingDir: undefined,
      execEnv: undefined,
      buildpackId: 'example/ruby',
    },
    {
      type: 'worker',
      command: ['ruby', 'worker.rb'],
      args: [],
      direct: true,
      workingDir: 'jobs',
      execEnv: undefined,
      buildpackId: 'example/ruby',
    },
  ],
  slices: [],
  labels: [],
  buildpackDefaultProcessType: 'web',
  bom: [],
};

let root: string;
let home: string;
let registry: TestRegistry;
let restoreHome: (() => void) | undefined;
let runStore: ImageStore;
let ws: { layers: string; app: string };
let remoteImage: ExportResult;
let localImage: ExportResult;
let children: ExportResult[];

async function prepareLayers(dir: string, arch: string): Promise<{ layers: string; app: string }> {
  const layers = join(dir, 'layers');
  const app = join(dir, 'workspace');
  const bp = join(layers, 'example_ruby');
  await mkdir(join(bp, 'gems'), { recursive: true });
  await writeFile(join(bp, 'gems', 'rack.rb'), `rack for ${arch}\n`);
  await writeFile(join(bp, 'gems.toml'), '[types]\nlaunch = true\n\n[metadata]\nlock = "abc"\n');
  await mkdir(join(layers, 'sbom', 'launch', 'example_ruby', 'gems'), { recursive: true });
  await writeFile(
    join(layers, 'sbom', 'launch', 'example_ruby', 'gems', 'sbom.cdx.json'),
    `{"bomFormat":"CycloneDX","arch":"${arch}"}`,
  );
  await mkdir(app, { recursive: true });
  await writeFile(join(app, 'app.rb'), 'puts 1\n');
  return { layers, app };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-inspect-'));
  home = join(root, 'home');
  restoreHome = usePackfarmHome(home);
  registry = await startRegistry();
  runStore = registryStore(registry, 'run');
  await createRunImage({ store: runStore, tag: 'v1', labels: { 'io.buildpacks.base.id': 'example.run' } });
  ws = await prepareLayers(join(root, 'amd64'), 'amd64');
  const run = {
    store: runStore,
    target: 'v1',
    name: `${registry.host}/run:v1`,
    mirrors: ['mirror.example/run:v1'],
  };

  // In the registry only.
  const appStore = registryStore(registry, 'app');
  remoteImage = await exportImage({
    layersDir: ws.layers,
    appDir: ws.app,
    group,
    metadata,
    runImage: run,
    platform: AMD64,
    outputs: [{ store: appStore, tags: ['1'] }],
  });

  // In the default local layout only (what a build without --publish writes).
  const local = await openImage(appImageLocation(`${registry.host}/local:1`, { publish: false }), {
    create: true,
  });
  localImage = await exportImage({
    layersDir: ws.layers,
    appDir: ws.app,
    group,
    metadata: { ...metadata, buildpackDefaultProcessType: 'worker' },
    runImage: run,
    platform: AMD64,
    outputs: [{ store: local.store, tags: ['1'] }],
  });

  // A two-platform index in an OCI layout: each child exported on its own run image, then the index.
  const multi = await openLayoutStore(join(root, 'multi'), { create: true });
  children = [];
  for (const platform of [ARM64, AMD64] as Platform[]) {
    const arch = platform.architecture;
    await createRunImage({ store: multi, tag: `run-${arch}`, platform });
    const dirs = await prepareLayers(join(root, arch), arch);
    children.push(
      await exportImage({
        layersDir: dirs.layers,
        appDir: dirs.app,
        group,
        metadata,
        runImage: { store: multi, target: `run-${arch}`, name: `example.com/run:${arch}` },
        platform,
        outputs: [{ store: multi, tags: [`app-${arch}`] }],
      }),
    );
  }
  await publishIndex({ store: multi, images: children.map((c) => c.digest), tags: ['latest'] });

  // Not CNB images.
  const plain = await openLayoutStore(join(root, 'plain'), { create: true });
  await writeTestImage(plain, {
    tag: 'plain',
    labels: { 'io.buildpacks.base.distro.name': 'debian', 'io.buildpacks.base.distro.version': '12' },
  });
  await writeTestImage(plain, {
    tag: 'broken',
    labels: { 'io.buildpacks.lifecycle.metadata': '{"runImage": ', 'io.buildpacks.rebasable': 'true' },
  });
  await writeTestImage(plain, {
    tag: 'noproc',
    labels: {
      'io.buildpacks.build.metadata': JSON.stringify({
        buildpacks: [{ id: 'example/lib', version: '1.0.0' }],
        processes: [],
        bom: [
          {
            name: 'openssl',
            metadata: { version: '3.0.11' },
            buildpack: { id: 'example/lib', version: '1.0.0' },
          },
        ],
      }),
      'io.buildpacks.lifecycle.metadata': JSON.stringify({ runImage: { topLayer: '', reference: '' } }),
    },
  });
  await writeTestImage(plain, {
    tag: 'wrong-shape',
    labels: { 'io.buildpacks.build.metadata': '{"processes":[{"type":7}]}' },
  });
});

afterAll(async () => {
  restoreHome?.();
  await registry?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('inspectApp', () => {
  it('reads a registry image: run image, target, buildpacks, processes, rebasable, sbom', async () => {
    const report = await inspectApp(`${registry.host}/app:1`, { insecureRegistries: [registry.host] });
    expect(report.local.present).toBe(false);
    expect(report.local.error).toBeNull();
    expect(report.local.location).toBe(
      `oci:${join(home, 'images', registry.host.replace(':', '_'), 'app')}:1`,
    );
    const remote = report.remote!;
    expect(remote.present).toBe(true);
    expect(remote.location).toBe(`${registry.host}/app:1`);
    const r = remote.result!;
    if (r.kind !== 'image') throw new Error('expected an image');
    expect(r.digest).toBe(remoteImage.digest);
    expect(r.platform).toBe('linux/amd64');
    expect(r.cnb).toBe(true);
    expect(r.stack).toBeNull();
    expect(r.target).toEqual({
      os: 'linux',
      arch: 'amd64',
      variant: null,
      distro: { name: 'busybox', version: '1' },
      baseId: 'example.run',
    });
    const runManifest = await runStore.getManifest('v1');
    expect(r.runImage).toEqual({
      reference: `${registry.host}/run@${runManifest.digest}`,
      topLayer: remoteImage.lifecycleMetadata.runImage.topLayer,
      image: `${registry.host}/run:v1`,
      mirrors: ['mirror.example/run:v1'],
    });
    expect(r.runImage?.topLayer).toMatch(/^sha256:/);
    expect(r.rebasable).toBe(true);
    expect(r.buildpacks).toEqual([
      { id: 'example/ruby', version: '1.0.0', homepage: 'https://example.com/ruby' },
    ]);
    expect(r.processes).toEqual([
      {
        type: 'web',
        command: ['ruby'],
        args: ['app.rb', '--port', '8080'],
        default: true,
        workingDir: '/workspace',
        buildpackId: 'example/ruby',
      },
      {
        type: 'worker',
        command: ['ruby', 'worker.rb'],
        args: [],
        default: false,
        workingDir: '/workspace/jobs',
        buildpackId: 'example/ruby',
      },
    ]);
    expect(r.sbom).toEqual({ diffId: remoteImage.lifecycleMetadata.sbom?.sha });
  });

  it('reads the default local layout for a bare reference and the registry beside it', async () => {
    const report = await inspectApp(`${registry.host}/local:1`, { insecureRegistries: [registry.host] });
    expect(report.remote?.present).toBe(false);
    expect(report.remote?.error).toBeNull();
    expect(report.local.present).toBe(true);
    const r = report.local.result!;
    if (r.kind !== 'image') throw new Error('expected an image');
    expect(r.digest).toBe(localImage.digest);
    expect(r.processes.map((p) => [p.type, p.default])).toEqual([
      ['web', false],
      ['worker', true],
    ]);
  });

  it('reads every child of an index, platform first', async () => {
    const report = await inspectApp(`oci:${join(root, 'multi')}`);
    expect(report.remote).toBeNull();
    const r = report.local.result!;
    if (r.kind !== 'index') throw new Error('expected an index');
    expect(r.images.map((i) => i.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    expect(r.images.map((i) => i.digest)).toEqual([children[1]!.digest, children[0]!.digest]);
    expect(Object.keys(r.images[0]!)[0]).toBe('platform');
    expect(r.images[1]!.target.arch).toBe('arm64');
    expect(r.images[1]!.runImage?.image).toBe('example.com/run:arm64');
  });
});

describe('packfarm inspect', () => {
  it('prints REMOTE and LOCAL sections like pack', async () => {
    const r = await runCli('inspect', `${registry.host}/app:1`, '--insecure-registry', registry.host);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const out = r.out;
    expect(out.startsWith(`Inspecting image: ${registry.host}/app:1\n\nREMOTE:\n`)).toBe(true);
    const [remote, local] = out.split('\nLOCAL:\n');
    expect(local).toContain('(not present)');
    expect(remote).toContain(`Digest: ${remoteImage.digest}`);
    expect(remote).toContain('Platform: linux/amd64');
    expect(remote).toMatch(
      new RegExp(`Base Image:\\n  Reference: ${registry.host}/run@sha256:[0-9a-f]{64}\\n`),
    );
    expect(remote).toContain(`  Top Layer: ${remoteImage.lifecycleMetadata.runImage.topLayer}`);
    expect(remote).toContain('  Target: linux/amd64');
    expect(remote).toContain('  Distro: busybox 1');
    expect(remote).toContain(`Run Images:\n  ${registry.host}/run:v1\n  mirror.example/run:v1 (mirror)`);
    expect(remote).toContain('Rebasable: true');
    expect(remote).toMatch(
      /Buildpacks:\n {2}ID +VERSION +HOMEPAGE\n {2}example\/ruby +1\.0\.0 +https:\/\/example\.com\/ruby/,
    );
    expect(remote).toMatch(/Processes:\n {2}TYPE +COMMAND +ARGS +WORK DIR\n/);
    expect(remote).toMatch(/ {2}web \(default\) +ruby +app\.rb --port 8080 +\/workspace\n/);
    expect(remote).toMatch(/ {2}worker +ruby worker\.rb +\/workspace\/jobs/);
  });

  it('--json gives one document with local and remote sections', async () => {
    const r = await runCli(
      'inspect',
      `${registry.host}/local:1`,
      '--json',
      '--insecure-registry',
      registry.host,
    );
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.out) as AppInspectReport;
    expect(Object.keys(doc)).toEqual(['image', 'local', 'remote']);
    expect(doc.image).toBe(`${registry.host}/local:1`);
    expect(doc.remote).toEqual({
      location: `${registry.host}/local:1`,
      present: false,
      error: null,
      result: null,
    });
    expect(Object.keys(doc.local)).toEqual(['location', 'present', 'error', 'result']);
    const img = doc.local.result;
    if (img?.kind !== 'image') throw new Error('expected an image');
    expect(Object.keys(img)).toEqual([
      'kind',
      'platform',
      'digest',
      'mediaType',
      'size',
      'created',
      'cnb',
      'stack',
      'target',
      'runImage',
      'rebasable',
      'buildpacks',
      'processes',
      'sbom',
      'bom',
    ]);
    expect(img.digest).toBe(localImage.digest);
    expect(img.created).toBe('1980-01-01T00:00:01Z');
  });

  it('shows each platform of an index in an oci: layout, and only that place', async () => {
    const r = await runCli('inspect', `oci:${join(root, 'multi')}:latest`);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).not.toContain('REMOTE:');
    expect(r.out).toContain('\nIMAGE:\n');
    expect(r.out).toContain('Images: 2 (linux/amd64, linux/arm64)');
    const amd = r.out.indexOf('\n\nPlatform: linux/amd64\n  Digest: ');
    const arm = r.out.indexOf('\n\nPlatform: linux/arm64\n  Digest: ');
    expect(amd).toBeGreaterThan(0);
    expect(arm).toBeGreaterThan(amd);
    expect(r.out).toContain(`  Digest: ${children[0]!.digest}`);
    expect(r.out).toContain('    example.com/run:arm64');

    const j = await runCli('inspect', `oci:${join(root, 'multi')}:latest`, '--json');
    const doc = JSON.parse(j.out) as AppInspectReport;
    expect(doc.remote).toBeNull();
    const idx = doc.local.result;
    if (idx?.kind !== 'index') throw new Error('expected an index');
    expect(Object.keys(idx)).toEqual(['kind', 'digest', 'mediaType', 'size', 'images']);
    expect(idx.images.map((i) => i.target.arch)).toEqual(['amd64', 'arm64']);
  });

  it('says so for an image without CNB labels', async () => {
    const r = await runCli('inspect', `oci:${join(root, 'plain')}:plain`);
    expect(r.code).toBe(0);
    expect(r.out).toContain('(no CNB labels: this image was not built by a buildpacks lifecycle)');
    expect(r.out).toContain('Target: linux/amd64 (debian 12)');
    const j = JSON.parse((await runCli('inspect', `oci:${join(root, 'plain')}:plain`, '--json')).out);
    expect(j.local.result).toMatchObject({
      cnb: false,
      rebasable: false,
      runImage: null,
      buildpacks: [],
      processes: [],
      sbom: null,
    });
  });

  it('shows an image without processes as such, and prints its legacy BOM with --bom', async () => {
    const loc = `oci:${join(root, 'plain')}:noproc`;
    const r = await runCli('inspect', loc);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain(
      'Processes:\n  (none: no buildpack declared a process; give the command to run the image)',
    );
    const bom = await runCli('inspect', loc, '--bom');
    expect(JSON.parse(bom.out)).toEqual({
      remote: null,
      local: {
        bom: [
          {
            name: 'openssl',
            metadata: { version: '3.0.11' },
            buildpack: { id: 'example/lib', version: '1.0.0' },
          },
        ],
      },
    });
    const bomYaml = await runCli('inspect', loc, '--bom', '-o', 'yaml');
    expect(bomYaml.out).toContain('local:\n  bom:\n    - name: "openssl"');
  });

  it('-o json|yaml|toml print the --json document in that format', async () => {
    const args = ['inspect', `${registry.host}/local:1`, '--insecure-registry', registry.host];
    const json = JSON.parse((await runCli(...args, '-o', 'json')).out);
    expect(json).toEqual(JSON.parse((await runCli(...args, '--json')).out));
    const yaml = await runCli(...args, '-o', 'yaml');
    expect(yaml.code, yaml.err).toBe(0);
    const parsed = await execa(
      'python3',
      ['-c', 'import sys,json,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'],
      { input: yaml.out },
    );
    expect(JSON.parse(parsed.stdout)).toEqual(json);
    const toml = await runCli(...args, '-o', 'toml');
    expect(toml.code, toml.err).toBe(0);
    const fromToml = parseToml(toml.out, 'inspect -o toml');
    // TOML has no null: the same document without its null fields.
    const dropNulls = (v: unknown): unknown =>
      Array.isArray(v)
        ? v.filter((x) => x !== null).map(dropNulls)
        : v !== null && typeof v === 'object'
          ? Object.fromEntries(
              Object.entries(v)
                .filter(([, x]) => x !== null)
                .map(([k, x]) => [k, dropNulls(x)]),
            )
          : v;
    expect(fromToml).toEqual(dropNulls(json));
    const bad = await runCli(...args, '-o', 'xml');
    expect(bad.code).toBe(1);
    expect(bad.err).toContain('--output "xml": not an output format');
  });

  it('names the image and the label when a label is not valid JSON or not the expected shape', async () => {
    const bad = await runCli('inspect', `oci:${join(root, 'plain')}:broken`);
    expect(bad.code).toBe(1);
    expect(bad.out).toBe('');
    expect(bad.err).toMatch(
      new RegExp(
        `^error: oci:${join(root, 'plain')}@sha256:[0-9a-f]{64}: label io\\.buildpacks\\.lifecycle\\.metadata: not valid JSON`,
      ),
    );
    const shape = await runCli('inspect', `oci:${join(root, 'plain')}:wrong-shape`, '--json');
    expect(shape.code).toBe(1);
    const e = JSON.parse(shape.err).error;
    expect(e.code).toBe('INVALID_LABEL');
    expect(e.message).toContain('label io.buildpacks.build.metadata: invalid content: processes[0].type');
  });

  it('still shows a local image when its registry cannot be reached, with the error in REMOTE', async () => {
    const ref = `127.0.0.1:${await freePort()}/offline:1`;
    const dest = await openImage(appImageLocation(ref, { publish: false }), { create: true });
    const exported = await exportImage({
      layersDir: ws.layers,
      appDir: ws.app,
      group,
      metadata,
      runImage: { store: runStore, target: 'v1', name: `${registry.host}/run:v1` },
      platform: AMD64,
      outputs: [{ store: dest.store, tags: ['1'] }],
    });
    const r = await runCli('inspect', ref, '--insecure-registry', ref.split('/')[0]!);
    expect(r.code).toBe(0);
    const [remote, local] = r.out.split('\nLOCAL:\n');
    expect(remote).toMatch(/\nerror: /);
    expect(local).toContain(`Digest: ${exported.digest}`);
    const doc = JSON.parse(
      (await runCli('inspect', ref, '--json', '--insecure-registry', ref.split('/')[0]!)).out,
    ) as AppInspectReport;
    expect(doc.remote?.present).toBe(false);
    expect(doc.remote?.error?.code).toMatch(/^[A-Z_]+$/);
    expect(doc.local.present).toBe(true);
  });

  it('fails when the image is in neither place', async () => {
    const r = await runCli('inspect', `${registry.host}/nowhere:1`, '--insecure-registry', registry.host);
    expect(r.code).toBe(1);
    expect(r.err).toContain(`error: unable to find image ${registry.host}/nowhere:1 locally (oci:`);
    expect(r.err).toContain(`or remotely (${registry.host}/nowhere:1)`);
  });
});
