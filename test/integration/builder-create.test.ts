import { cp, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { debianBaseImages } from '../helpers/base-images.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';

/**
 * `packfarm builder create` from pack's builder.toml onto real Debian 12 base images (amd64 + arm64, made by
 * base create): one builder image per target in an index, the labels pack writes (compared field by field),
 * `builder inspect`, a build that uses the builder from the registry, reproducible digests, and errors that
 * name builder.toml's field.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'build');

let root: string;
let registry: TestRegistry;
let buildImage: string;
let runImage: string;
let baseLayers: { amd64: number; arm64: number };

function packfarm(args: string[], cwd = root) {
  return execa(process.execPath, [join(repoRoot, 'bin', 'packfarm.js'), ...args], {
    cwd,
    env: { PACKFARM_HOME: join(root, 'home'), NO_COLOR: '1' },
    reject: false,
  });
}

async function skopeoJson(...args: string[]): Promise<Record<string, unknown>> {
  const r = await execa('skopeo', ['inspect', '--tls-verify=false', ...args], { reject: false });
  if (r.exitCode !== 0) throw new Error(`skopeo inspect ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

function builderToml(extra = ''): string {
  return `description = "packfarm test builder"

[[buildpacks]]
uri = "${join(repoRoot, 'buildpacks', 'procfile')}"

[[buildpacks]]
id = "test/composite"
uri = "bp/composite"

[[buildpacks]]
uri = "bp/env-consumer"

[[buildpacks]]
uri = "dep-provider.tgz"

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
    indexDigest = (JSON.parse(r.stdout) as { digest: string }).digest;

    const index = await skopeoJson('--raw', `docker://${ref}`);
    expect(index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
    expect((index.manifests as { platform: unknown }[]).map((m) => m.platform)).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux' },
    ]);

    for (const arch of ['amd64', 'arm64'] as const) {
      const cfg = await skopeoJson('--config', '--override-arch', arch, `docker://${ref}`);
      expect(cfg.architecture).toBe(arch);
      const c = cfg.config as { Labels: Record<string, string>; WorkingDir: string; Env: string[] };
      const diffIds = (cfg.rootfs as { diff_ids: string[] }).diff_ids;
      // base + dirs + 4 buildpacks + order.toml + stack.toml + run.toml + build-config env + its delims
      expect(diffIds.length).toBe(baseLayers[arch] + 1 + 4 + 3 + 2);
      expect(c.WorkingDir).toBe('/layers');
      expect(c.Env).toEqual(expect.arrayContaining(['CNB_USER_ID=1001', 'CNB_GROUP_ID=1000']));
      // The build image's labels stay.
      expect(c.Labels['io.buildpacks.base.distro.name']).toBe('debian');
      expect(c.Labels['io.buildpacks.stack.id']).toBe('io.packfarm.debian-12');

      expect(JSON.parse(c.Labels['io.buildpacks.builder.metadata']!)).toEqual({
        description: 'packfarm test builder',
        buildpacks: [
          {
            id: 'packfarm/procfile',
            name: 'packfarm Procfile',
            version: '0.1.0',
            description: expect.any(String),
          },
          { id: 'test/composite', name: expect.any(String), version: '1.0.0' },
          { id: 'test/dep-provider', name: 'Fixture test/dep-provider', version: '1.0.0' },
          { id: 'test/env-consumer', name: expect.any(String), version: '1.0.0' },
        ],
        extensions: null,
        stack: { runImage: { image: runImage, mirrors: ['mirror.example/base/run:t'] } },
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
      });
      expect(c.Labels['io.buildpacks.buildpack.order-extensions']).toBe('null');
      expect(c.Labels['io.buildpacks.extension.layers']).toBe('{}');
      expect(c.Labels['io.buildpacks.stack.mixins']).toBe('null');
      expect(JSON.parse(c.Labels['io.buildpacks.buildpack.order']!)).toEqual([
        { group: [{ id: 'packfarm/procfile', version: '0.1.0' }] },
        {
          group: [
            { id: 'test/composite', version: '1.0.0' },
            { id: 'test/dep-provider', version: '1.0.0', optional: true },
          ],
        },
      ]);
      const layers = JSON.parse(c.Labels['io.buildpacks.buildpack.layers']!) as Record<
        string,
        Record<string, { api: string; layerDiffID: string; order?: unknown; targets?: unknown }>
      >;
      expect(Object.keys(layers)).toEqual([
        'packfarm/procfile',
        'test/composite',
        'test/dep-provider',
        'test/env-consumer',
      ]);
      expect(layers['test/composite']?.['1.0.0']?.order).toEqual([
        { group: [{ id: 'test/env-consumer', version: '1.0.0' }] },
      ]);
      expect(layers['packfarm/procfile']?.['0.1.0']?.targets).toEqual([{ os: 'linux' }]);
      // Each buildpack's layer is one of the image's layers, right after the base and the dirs layer.
      const bpDiffIds = Object.values(layers).flatMap((v) => Object.values(v).map((i) => i.layerDiffID));
      expect(diffIds.slice(baseLayers[arch] + 1, baseLayers[arch] + 5)).toEqual(bpDiffIds);
      for (const v of Object.values(layers)) for (const i of Object.values(v)) expect(i.api).toBe('0.12');
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
    expect(info.platforms[1]?.order).toHaveLength(2);
    expect(info.platforms[1]?.runImages).toEqual([
      { image: runImage, mirrors: ['mirror.example/base/run:t'] },
    ]);
    expect(info.platforms[0]?.buildpacks.map((b) => b.id)).toContain('test/dep-provider');
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

  it('refuses a target the base lacks', async () => {
    const { stderr } = await failing(builderToml(), ['--target', 'linux/s390x']);
    expect(stderr).toContain('--target: target linux/s390x is not among the build image');
    const { file, stderr: fromFile } = await failing(
      `${builderToml()}\n[[targets]]\nos = "linux"\narch = "ppc64le"\n`,
    );
    expect(fromFile).toContain(`${file}: targets: target linux/ppc64le is not among the build image`);
  });
});
