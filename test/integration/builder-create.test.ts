import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packfarmProcess, skopeoJson } from '../helpers/cli.js';
import { debianBaseImages } from '../helpers/base-images.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';

/**
 * `packfarm builder create` from pack's builder.toml onto real Debian 12 base images (amd64 + arm64, made by
 * base create): one builder image per target in an index, the labels pack writes (compared field by field),
 * `builder inspect`, a build that uses the builder from the registry, reproducible digests, and errors that
 * name builder.toml's field.
 *
 * The builder.toml has the shape of buildpacks/samples' builders/noble/builder.toml (test/integration/
 * samples-builder.test.ts runs that file itself when PACKFARM_SAMPLES_DIR is set): relative-path buildpacks
 * with id and version, one of them for linux/amd64 only although the builder targets arm64 too, a
 * `docker://` buildpackage (a composite made by `packfarm buildpack package`, like the samples'
 * hello-universe) whose id an [[order]] group names, [build] and [[run.images]], and two [[targets]]. The
 * expected labels are what pack v0.40 writes for this file (read from pack's internal/builder/builder.go,
 * metadata.go and pkg/dist): metadata `buildpacks` in builder.toml's order (a buildpackage's entry buildpack,
 * then its others sorted), the order label as written, `stack.runImage` empty without a [stack] id, `mirrors`
 * null when not given, targets with `os` and `arch` always present.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'build');

let root: string;
let registry: TestRegistry;
let buildImage: string;
let runImage: string;
let baseLayers: { amd64: number; arm64: number };
let universeRef: string;

function packfarm(args: string[], cwd = root) {
  return packfarmProcess(args, { cwd, home: join(root, 'home') });
}

function builderToml(extra = ''): string {
  return `description = "packfarm test builder"

[[buildpacks]]
uri = "${join(repoRoot, 'buildpacks', 'procfile')}"

[[buildpacks]]
id = "test/composite"
version = "1.0.0"
uri = "bp/composite"

[[buildpacks]]
uri = "bp/env-consumer"

[[buildpacks]]
uri = "dep-provider.tgz"

[[buildpacks]]
id = "test/amd64-only"
version = "1.0.0"
uri = "bp/amd64-only"

[[buildpacks]]
uri = "docker://${universeRef}"

[[order]]
[[order.group]]
id = "packfarm/procfile"

[[order]]
[[order.group]]
id = "test/composite"
[[order.group]]
id = "test/dep-provider"
version = "1.0.0"
optional = true

[[order]]
[[order.group]]
id = "test/amd64-only"
version = "1.0.0"

[[order]]
[[order.group]]
id = "test/universe"
version = "1.0.0"

[build]
image = "${buildImage}"
[[build.env]]
name = "BP_GREETING"
value = "hello"
[[build.env]]
name = "PATH_EXTRA"
value = "/opt/x"
suffix = "prepend"
delim = ":"

[run]
[[run.images]]
image = "${runImage}"
mirrors = ["mirror.example/base/run:t"]

[[targets]]
os = "linux"
arch = "arm64"
[[targets]]
os = "linux"
arch = "amd64"

[lifecycle]
version = "0.20.5"
${extra}`;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-builder-'));
  registry = await startRegistry({ proxy: false });
  buildImage = `${registry.host}/base/build:t`;
  runImage = `${registry.host}/base/run:t`;
  await debianBaseImages({
    arches: ['amd64', 'arm64'],
    buildTag: buildImage,
    runTag: runImage,
    insecureRegistries: [registry.host],
  });
  for (const arch of ['amd64', 'arm64'] as const) {
    const cfg = await skopeoJson('--config', '--override-arch', arch, `docker://${buildImage}`);
    baseLayers = { ...baseLayers, [arch]: (cfg.rootfs as { diff_ids: string[] }).diff_ids.length };
  }
  await cp(join(fixtures, 'test_composite', '1.0.0'), join(root, 'bp', 'composite'), { recursive: true });
  await cp(join(fixtures, 'test_env-consumer', '1.0.0'), join(root, 'bp', 'env-consumer'), {
    recursive: true,
  });
  await execa('tar', [
    '-czf',
    join(root, 'dep-provider.tgz'),
    '-C',
    join(fixtures, 'test_dep-provider', '1.0.0'),
    '.',
  ]);
  // Like the samples' java-maven: a buildpack for linux/amd64 only, with every [buildpack] field pack copies.
  const amd64Only = join(root, 'bp', 'amd64-only');
  await mkdir(join(amd64Only, 'bin'), { recursive: true });
  await writeFile(
    join(amd64Only, 'buildpack.toml'),
    `api = "0.11"
[buildpack]
id = "test/amd64-only"
version = "1.0.0"
name = "amd64 only"
description = "detects nothing"
homepage = "https://example.com/amd64-only"
keywords = ["amd64", "fixture"]
[[buildpack.licenses]]
type = "MIT"
uri = "https://example.com/license"
[[targets]]
os = "linux"
arch = "amd64"
`,
  );
  await writeFile(join(amd64Only, 'bin', 'detect'), '#!/bin/sh\nexit 100\n', { mode: 0o755 });
  await writeFile(join(amd64Only, 'bin', 'build'), '#!/bin/sh\nexit 1\n', { mode: 0o755 });
  // Like the samples' hello-universe: a composite packaged with its two children, pushed as a two-arch index.
  await mkdir(join(root, 'bp', 'universe'), { recursive: true });
  await writeFile(
    join(root, 'bp', 'universe', 'buildpack.toml'),
    `api = "0.12"
[buildpack]
id = "test/universe"
version = "1.0.0"
name = "Universe"
homepage = "https://example.com/universe"
[[order]]
[[order.group]]
id = "test/processes"
version = "1.0.0"
[[order.group]]
id = "test/env-provider"
version = "1.0.0"
`,
  );
  await writeFile(
    join(root, 'universe-package.toml'),
    `[buildpack]
uri = "bp/universe"
[[dependencies]]
uri = "${join(fixtures, 'test_processes', '1.0.0')}"
[[dependencies]]
uri = "${join(fixtures, 'test_env-provider', '1.0.0')}"
[[targets]]
os = "linux"
arch = "amd64"
[[targets]]
os = "linux"
arch = "arm64"
`,
  );
  universeRef = `${registry.host}/buildpacks/universe:1`;
  const pkg = await packfarm([
    'buildpack',
    'package',
    universeRef,
    '--config',
    'universe-package.toml',
    '--publish',
    '--insecure-registry',
    registry.host,
  ]);
  if (pkg.exitCode !== 0) throw new Error(`buildpack package: ${pkg.stderr}`);
  await writeFile(join(root, 'builder.toml'), builderToml());
});

afterAll(async () => {
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('packfarm builder create', () => {
  let indexDigest: string;

  it('writes one builder per target as an index, with the layers and labels pack writes', async () => {
    const ref = `${registry.host}/builders/test:1`;
    const r = await packfarm([
      'builder',
      'create',
      ref,
      '--config',
      'builder.toml',
      '--publish',
      '--insecure-registry',
      registry.host,
      '--json',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toContain('[lifecycle] is accepted and not used');
    // pack refuses the arm64 target here; packfarm keeps the buildpack and says the detector will skip it.
    expect(r.stderr).toContain(
      'linux/arm64: buildpack test/amd64-only@1.0.0 (linux/amd64) does not support this target',
    );
    expect(r.stderr).not.toContain('linux/amd64: buildpack');
    indexDigest = (JSON.parse(r.stdout) as { digest: string }).digest;

    const index = await skopeoJson('--raw', `docker://${ref}`);
    expect(index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect((index.manifests as { platform: unknown }[]).map((m) => m.platform)).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux' },
    ]);

    const universe: Record<string, { layerDiffID: string }> = {};
    for (const arch of ['amd64', 'arm64'] as const) {
      const pkg = await skopeoJson('--config', '--override-arch', arch, `docker://${universeRef}`);
      const pkgLayers = JSON.parse(
        (pkg.config as { Labels: Record<string, string> }).Labels['io.buildpacks.buildpack.layers']!,
      ) as Record<string, Record<string, { layerDiffID: string }>>;
      for (const [id, v] of Object.entries(pkgLayers)) universe[`${arch} ${id}`] = v['1.0.0']!;
      // The buildpackage's own label, as pack writes it: the entry buildpack's info and the resolved stacks.
      expect(
        (pkg.config as { Labels: Record<string, string> }).Labels['io.buildpacks.buildpackage.metadata'],
      ).toBe(
        JSON.stringify({
          id: 'test/universe',
          name: 'Universe',
          version: '1.0.0',
          homepage: 'https://example.com/universe',
          stacks: [{ id: '*' }],
        }),
      );
    }

    for (const arch of ['amd64', 'arm64'] as const) {
      const cfg = await skopeoJson('--config', '--override-arch', arch, `docker://${ref}`);
      expect(cfg.architecture).toBe(arch);
      const c = cfg.config as { Labels: Record<string, string>; WorkingDir: string; Env: string[] };
      const diffIds = (cfg.rootfs as { diff_ids: string[] }).diff_ids;
      // base + dirs + 8 buildpacks + order.toml + stack.toml + run.toml + build-config env + its delims
      expect(diffIds.length).toBe(baseLayers[arch] + 1 + 8 + 3 + 2);
      expect(c.WorkingDir).toBe('/layers');
      expect(c.Env).toEqual(expect.arrayContaining(['CNB_USER_ID=1001', 'CNB_GROUP_ID=1000']));
      // Every label, each field: the build image's stay, pack's are added.
      expect(Object.keys(c.Labels).sort()).toEqual([
        'io.buildpacks.base.distro.name',
        'io.buildpacks.base.distro.version',
        'io.buildpacks.base.id',
        'io.buildpacks.builder.metadata',
        'io.buildpacks.buildpack.layers',
        'io.buildpacks.buildpack.order',
        'io.buildpacks.buildpack.order-extensions',
        'io.buildpacks.extension.layers',
        'io.buildpacks.stack.id',
        'io.buildpacks.stack.mixins',
      ]);
      expect(c.Labels['io.buildpacks.base.distro.name']).toBe('debian');
      expect(c.Labels['io.buildpacks.base.distro.version']).toBe('12');
      expect(c.Labels['io.buildpacks.base.id']).toBe('io.packfarm.debian-12');
      expect(c.Labels['io.buildpacks.stack.id']).toBe('io.packfarm.debian-12');

      // Compared as text too, so key order (pack's struct order) counts.
      const metadataText = c.Labels['io.buildpacks.builder.metadata']!;
      const metadata = {
        description: 'packfarm test builder',
        buildpacks: [
          {
            id: 'packfarm/procfile',
            name: 'packfarm Procfile',
            version: '0.1.0',
            description: 'Launch processes from a Procfile (type: command per line), each run through sh -c',
            licenses: [{ type: 'Apache-2.0', uri: '' }],
          },
          {
            id: 'test/composite',
            name: 'Fixture composite (only valid in orders, never in group.toml)',
            version: '1.0.0',
          },
          { id: 'test/env-consumer', name: 'Fixture test/env-consumer', version: '1.0.0' },
          { id: 'test/dep-provider', name: 'Fixture test/dep-provider', version: '1.0.0' },
          {
            id: 'test/amd64-only',
            name: 'amd64 only',
            version: '1.0.0',
            description: 'detects nothing',
            homepage: 'https://example.com/amd64-only',
            keywords: ['amd64', 'fixture'],
            licenses: [{ type: 'MIT', uri: 'https://example.com/license' }],
          },
          // The buildpackage: its entry buildpack, then the others sorted; id, name, version, homepage only.
          {
            id: 'test/universe',
            name: 'Universe',
            version: '1.0.0',
            homepage: 'https://example.com/universe',
          },
          { id: 'test/env-provider', name: 'Fixture test/env-provider', version: '1.0.0' },
          { id: 'test/processes', name: 'Fixture test/processes', version: '1.0.0' },
        ],
        extensions: null,
        // No [stack] id: pack leaves the deprecated stack run image empty.
        stack: { runImage: { image: '', mirrors: null } },
        lifecycle: {
          version: '0.1.0',
          api: { buildpack: '0.12', platform: '0.15' },
          apis: {
            buildpack: { deprecated: [], supported: ['0.9', '0.10', '0.11', '0.12'] },
            platform: { deprecated: [], supported: ['0.12', '0.13', '0.14', '0.15'] },
          },
        },
        createdBy: { name: 'packfarm', version: '0.1.0' },
        images: [{ image: runImage, mirrors: ['mirror.example/base/run:t'] }],
      };
      expect(JSON.parse(metadataText)).toEqual(metadata);
      expect(metadataText).toBe(JSON.stringify(metadata));
      expect(c.Labels['io.buildpacks.buildpack.order-extensions']).toBe('null');
      expect(c.Labels['io.buildpacks.extension.layers']).toBe('{}');
      expect(c.Labels['io.buildpacks.stack.mixins']).toBe('null');
      // The order as builder.toml has it: a version it leaves out stays out (order.toml has it resolved).
      expect(c.Labels['io.buildpacks.buildpack.order']).toBe(
        JSON.stringify([
          { group: [{ id: 'packfarm/procfile' }] },
          {
            group: [{ id: 'test/composite' }, { id: 'test/dep-provider', version: '1.0.0', optional: true }],
          },
          { group: [{ id: 'test/amd64-only', version: '1.0.0' }] },
          { group: [{ id: 'test/universe', version: '1.0.0' }] },
        ]),
      );
      const layersText = c.Labels['io.buildpacks.buildpack.layers']!;
      const layers = JSON.parse(layersText) as Record<string, Record<string, { layerDiffID: string }>>;
      const diffId = (id: string) => layers[id]?.['1.0.0']?.layerDiffID ?? layers[id]?.['0.1.0']?.layerDiffID;
      const linux = [{ os: 'linux', arch: '' }];
      const expectedLayers = {
        'packfarm/procfile': {
          '0.1.0': {
            api: '0.12',
            targets: linux,
            layerDiffID: diffId('packfarm/procfile'),
            name: 'packfarm Procfile',
          },
        },
        'test/amd64-only': {
          '1.0.0': {
            api: '0.11',
            targets: [{ os: 'linux', arch: 'amd64' }],
            layerDiffID: diffId('test/amd64-only'),
            homepage: 'https://example.com/amd64-only',
            name: 'amd64 only',
          },
        },
        'test/composite': {
          '1.0.0': {
            api: '0.12',
            order: [{ group: [{ id: 'test/env-consumer', version: '1.0.0' }] }],
            layerDiffID: diffId('test/composite'),
            name: 'Fixture composite (only valid in orders, never in group.toml)',
          },
        },
        'test/dep-provider': {
          '1.0.0': {
            api: '0.12',
            targets: linux,
            layerDiffID: diffId('test/dep-provider'),
            name: 'Fixture test/dep-provider',
          },
        },
        'test/env-consumer': {
          '1.0.0': {
            api: '0.12',
            targets: linux,
            layerDiffID: diffId('test/env-consumer'),
            name: 'Fixture test/env-consumer',
          },
        },
        'test/env-provider': {
          '1.0.0': {
            api: '0.12',
            targets: linux,
            layerDiffID: universe[`${arch} test/env-provider`]?.layerDiffID,
            name: 'Fixture test/env-provider',
          },
        },
        'test/processes': {
          '1.0.0': {
            api: '0.12',
            targets: linux,
            layerDiffID: universe[`${arch} test/processes`]?.layerDiffID,
            name: 'Fixture test/processes',
          },
        },
        'test/universe': {
          '1.0.0': {
            api: '0.12',
            order: [
              {
                group: [
                  { id: 'test/processes', version: '1.0.0' },
                  { id: 'test/env-provider', version: '1.0.0' },
                ],
              },
            ],
            layerDiffID: universe[`${arch} test/universe`]?.layerDiffID,
            homepage: 'https://example.com/universe',
            name: 'Universe',
          },
        },
      };
      expect(layersText).toBe(JSON.stringify(expectedLayers));
      // Each buildpack's layer is one of the image's layers, right after the base and the dirs layer, sorted
      // by id; the buildpackage's are its own layers, unchanged.
      const bpDiffIds = Object.values(layers).flatMap((v) => Object.values(v).map((i) => i.layerDiffID));
      expect(new Set(bpDiffIds).size).toBe(8);
      expect(diffIds.slice(baseLayers[arch] + 1, baseLayers[arch] + 9)).toEqual(bpDiffIds);
    }
  });

  it('shows order, buildpacks, run images and targets with builder inspect', async () => {
    const r = await packfarm([
      'builder',
      'inspect',
      `${registry.host}/builders/test:1`,
      '--publish',
      '--insecure-registry',
      registry.host,
      '--json',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as {
      digest: string;
      platforms: { platform: string; order: unknown[]; runImages: unknown[]; buildpacks: { id: string }[] }[];
    };
    expect(info.digest).toBe(indexDigest);
    expect(info.platforms.map((p) => p.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    expect(info.platforms[1]?.order).toHaveLength(4);
    expect(info.platforms[1]?.order[0]).toEqual({ group: [{ id: 'packfarm/procfile', optional: false }] });
    expect(info.platforms[1]?.runImages).toEqual([
      { image: runImage, mirrors: ['mirror.example/base/run:t'] },
    ]);
    expect(info.platforms[0]?.buildpacks.map((b) => b.id)).toContain('test/universe');
    const human = await packfarm([
      'builder',
      'inspect',
      `${registry.host}/builders/test:1`,
      '--publish',
      '--insecure-registry',
      registry.host,
    ]);
    expect(human.stdout).toContain('Targets: linux/amd64, linux/arm64');
    expect(human.stdout).toContain('test/dep-provider@1.0.0 (optional)');
  });

  it('is reproducible: the same builder.toml gives the same index digest in an OCI layout', async () => {
    const r = await packfarm([
      'builder',
      'create',
      `oci:${root}/builder:1`,
      '--config',
      'builder.toml',
      '--insecure-registry',
      registry.host,
      '--json',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect((JSON.parse(r.stdout) as { digest: string }).digest).toBe(indexDigest);
    const umoci = await execa('umoci', ['ls', '--layout', join(root, 'builder')], { reject: false });
    expect(umoci.exitCode, umoci.stderr).toBe(0);
  });

  it('builds an app with the builder from the registry', async () => {
    const app = join(root, 'app');
    await cp(join(repoRoot, 'examples', 'hello'), app, { recursive: true });
    const r = await packfarm([
      'build',
      `oci:${root}/app-image:1`,
      '--path',
      app,
      '--builder',
      `docker://${registry.host}/builders/test:1`,
      '--run-image',
      `docker://${runImage}`,
      '--insecure-registry',
      registry.host,
    ]);
    expect(r.exitCode, r.stderr + r.stdout).toBe(0);
    expect(r.stdout + r.stderr).toContain('packfarm/procfile');
  });
});

describe('packfarm builder create: bad input', () => {
  async function failing(toml: string, extra: string[] = []) {
    const file = join(root, 'bad.toml');
    await writeFile(file, toml);
    const r = await packfarm([
      'builder',
      'create',
      `oci:${root}/bad:1`,
      '--config',
      file,
      '--insecure-registry',
      registry.host,
      ...extra,
    ]);
    expect(r.exitCode).not.toBe(0);
    return { file, stderr: r.stderr };
  }

  it('names the order entry whose buildpack id is unknown', async () => {
    const { file, stderr } = await failing(
      builderToml().replace('id = "packfarm/procfile"\n\n[[order]]', 'id = "acme/nope"\n\n[[order]]'),
    );
    expect(stderr).toContain(
      `${file}: order[0].group[0]: buildpack acme/nope is not among the builder's [[buildpacks]]`,
    );
  });

  it('names a buildpack entry without uri', async () => {
    const { file, stderr } = await failing(builderToml().replace('uri = "bp/env-consumer"', 'id = "x/y"'));
    expect(stderr).toContain(`${file}: invalid content: buildpacks[2].uri:`);
  });

  it('refuses a target on which no order group can pass detection', async () => {
    const { file, stderr } = await failing(
      `[[buildpacks]]
id = "test/amd64-only"
version = "1.0.0"
uri = "bp/amd64-only"
[[order]]
[[order.group]]
id = "test/amd64-only"
[build]
image = "${buildImage}"
[[run.images]]
image = "${runImage}"
`,
      ['--target', 'linux/arm64'],
    );
    expect(stderr).toContain(
      `${file}: no order group can run on linux/arm64: test/amd64-only@1.0.0 (linux/amd64) does not support it`,
    );
  });

  it('refuses a target the base lacks', async () => {
    const { stderr } = await failing(builderToml(), ['--target', 'linux/s390x']);
    expect(stderr).toContain('--target: target linux/s390x is not among the build image');
    const { file, stderr: fromFile } = await failing(
      `${builderToml()}\n[[targets]]\nos = "linux"\narch = "ppc64le"\n`,
    );
    expect(fromFile).toContain(`${file}: targets: target linux/ppc64le is not among the build image`);
  });
});
