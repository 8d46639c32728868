import { createHash } from 'node:crypto';
import { cp, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveBuilder } from '../../src/builder/resolve.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { packfarmProcess, skopeoJson } from '../helpers/cli.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { createRunImage } from '../helpers/run-image.js';

/**
 * `packfarm buildpack package` from pack's package.toml: a component buildpack as a .cnb file and as a
 * two-target image index in a registry, a composite whose dependency is that .cnb, read back by skopeo
 * (docker:// and oci-archive:), and the packages used as `docker://` and `oci:` buildpack URIs in a
 * builder.toml, where their layers are reused unchanged.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixtures = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'build');

let root: string;
let registry: TestRegistry;

function packfarm(args: string[]) {
  return packfarmProcess(args, { cwd: root, home: join(root, 'home') });
}

const sha256 = async (file: string) =>
  createHash('sha256')
    .update(await readFile(file))
    .digest('hex');

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-package-'));
  registry = await startRegistry({ proxy: false });
  await cp(join(fixtures, 'test_composite', '1.0.0'), join(root, 'composite'), { recursive: true });
  await cp(join(fixtures, 'test_env-consumer', '1.0.0'), join(root, 'env-consumer'), { recursive: true });
  const targets = '[[targets]]\nos = "linux"\narch = "amd64"\n[[targets]]\nos = "linux"\narch = "arm64"\n';
  await writeFile(join(root, 'consumer.toml'), `[buildpack]\nuri = "env-consumer"\n${targets}`);
  await writeFile(
    join(root, 'composite.toml'),
    `[buildpack]\nuri = "composite"\n[[dependencies]]\nuri = "consumer.cnb"\n${targets}`,
  );
});

afterAll(async () => {
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('packfarm buildpack package', () => {
  it('writes a .cnb file (an OCI layout tar) with one image per target, the same bytes every time', async () => {
    let r = await packfarm([
      'buildpack',
      'package',
      'consumer.cnb',
      '--config',
      'consumer.toml',
      '--format',
      'file',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    const first = await sha256(join(root, 'consumer.cnb'));
    r = await packfarm([
      'buildpack',
      'package',
      'again.cnb',
      '--config',
      'consumer.toml',
      '--format',
      'file',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(await sha256(join(root, 'again.cnb'))).toBe(first);

    const cfg = await skopeoJson(
      '--config',
      '--override-arch',
      'arm64',
      `oci-archive:${join(root, 'consumer.cnb')}`,
    );
    expect(cfg.architecture).toBe('arm64');
    const labels = (cfg.config as { Labels: Record<string, string> }).Labels;
    expect(JSON.parse(labels['io.buildpacks.buildpackage.metadata']!)).toEqual({
      id: 'test/env-consumer',
      name: 'Fixture test/env-consumer',
      version: '1.0.0',
      // pack's resolved stacks: a buildpack with neither stacks nor an order runs on any.
      stacks: [{ id: '*' }],
    });
    const layers = JSON.parse(labels['io.buildpacks.buildpack.layers']!) as Record<
      string,
      Record<string, unknown>
    >;
    expect(layers).toEqual({
      'test/env-consumer': {
        '1.0.0': {
          api: '0.12',
          targets: [{ os: 'linux', arch: '' }],
          layerDiffID: (cfg.rootfs as { diff_ids: string[] }).diff_ids[0],
          name: 'Fixture test/env-consumer',
        },
      },
    });
  });

  it('packages a composite with a .cnb dependency into a registry as an index', async () => {
    const ref = `${registry.host}/buildpacks/composite:1`;
    const r = await packfarm([
      'buildpack',
      'package',
      ref,
      '--config',
      'composite.toml',
      '--publish',
      '--insecure-registry',
      registry.host,
      '--json',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    const index = await skopeoJson('--raw', `docker://${ref}`);
    expect((index.manifests as { platform: unknown }[]).map((m) => m.platform)).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux' },
    ]);
    const cfg = await skopeoJson('--config', '--override-arch', 'amd64', `docker://${ref}`);
    const labels = (cfg.config as { Labels: Record<string, string> }).Labels;
    // A composite has no stacks of its own; its child's `*` is what the package can run on.
    expect(JSON.parse(labels['io.buildpacks.buildpackage.metadata']!)).toEqual({
      id: 'test/composite',
      name: 'Fixture composite (only valid in orders, never in group.toml)',
      version: '1.0.0',
      stacks: [{ id: '*' }],
    });
    const layers = JSON.parse(labels['io.buildpacks.buildpack.layers']!) as Record<
      string,
      Record<string, { order?: unknown; layerDiffID: string }>
    >;
    expect(Object.keys(layers)).toEqual(['test/composite', 'test/env-consumer']);
    expect(layers['test/composite']?.['1.0.0']?.order).toEqual([
      { group: [{ id: 'test/env-consumer', version: '1.0.0' }] },
    ]);
    // The dependency's layer is the one in the .cnb, unchanged.
    const cnb = await skopeoJson(
      '--config',
      '--override-arch',
      'amd64',
      `oci-archive:${join(root, 'consumer.cnb')}`,
    );
    expect(layers['test/env-consumer']?.['1.0.0']?.layerDiffID).toBe(
      (cnb.rootfs as { diff_ids: string[] }).diff_ids[0],
    );
  });

  it('serves as a docker:// and an oci: buildpack uri in builder.toml', async () => {
    const build = await openLayoutStore(join(root, 'build'), { create: true });
    await createRunImage({ store: build, tag: 'latest', env: ['CNB_USER_ID=1000', 'CNB_GROUP_ID=1000'] });
    let r = await packfarm([
      'buildpack',
      'package',
      `oci:${root}/pkg/consumer:1`,
      '--config',
      'consumer.toml',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    await writeFile(
      join(root, 'builder.toml'),
      `[[buildpacks]]
uri = "docker://${registry.host}/buildpacks/composite:1"
[[buildpacks]]
uri = "oci:pkg/consumer:1"
[[order]]
[[order.group]]
id = "test/composite"
[build]
image = "oci:build:latest"
[run]
[[run.images]]
image = "registry.example/run:1"

# The deprecated [stack] next to [build]/[run], as the samples' builders have it.
[stack]
id = "io.packfarm.test.stack"
build-image = "oci:build:latest"
run-image = "registry.example/run:1"
`,
    );
    r = await packfarm([
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
    const cfg = await skopeoJson('--config', `oci:${root}/builder:1`);
    const labels = (cfg.config as { Labels: Record<string, string> }).Labels;
    expect(labels['io.buildpacks.stack.id']).toBe('io.packfarm.test.stack');
    const layers = JSON.parse(labels['io.buildpacks.buildpack.layers']!) as Record<
      string,
      Record<string, { layerDiffID: string }>
    >;
    const pkg = await skopeoJson(
      '--config',
      '--override-arch',
      'amd64',
      `docker://${registry.host}/buildpacks/composite:1`,
    );
    const pkgLayers = JSON.parse(
      (pkg.config as { Labels: Record<string, string> }).Labels['io.buildpacks.buildpack.layers']!,
    );
    expect(layers).toEqual(pkgLayers);
    const diffIds = (cfg.rootfs as { diff_ids: string[] }).diff_ids;
    for (const v of Object.values(layers))
      for (const i of Object.values(v)) expect(diffIds).toContain(i.layerDiffID);

    // A build from the builder.toml directory stages the same buildpackages' buildpacks to run them.
    const resolved = await resolveBuilder(join(root, 'builder.toml'), {
      cwd: root,
      scratchDir: join(root, 'scratch'),
      insecureRegistries: [registry.host],
      platform: { os: 'linux', architecture: 'arm64' },
    });
    try {
      expect(resolved.order.order).toEqual([
        { group: [{ id: 'test/composite', version: '1.0.0', optional: false }] },
      ]);
      const composite = await resolved.store.lookup('test/composite', '1.0.0');
      expect(composite.order[0]?.group.map((e) => e.id)).toEqual(['test/env-consumer']);
      const child = await resolved.store.lookup('test/env-consumer', '1.0.0');
      expect(child.dir).toContain(join('cnb', 'buildpacks', 'test_env-consumer', '1.0.0'));
    } finally {
      await resolved.cleanup();
    }
  });

  it('inspects packages, and packages a new buildpack for the targets its buildpack.toml declares', async () => {
    let r = await packfarm(['buildpack', 'inspect', 'consumer.cnb', '--json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const info = JSON.parse(r.stdout) as {
      platforms: { platform: string; id: string; buildpacks: unknown[] }[];
    };
    expect(info.platforms.map((p) => [p.platform, p.id, p.buildpacks.length])).toEqual([
      ['linux/amd64', 'test/env-consumer', 1],
      ['linux/arm64', 'test/env-consumer', 1],
    ]);
    r = await packfarm(['buildpack', 'new', 'acme/hello', '--path', 'hello-bp']);
    expect(r.exitCode, r.stderr).toBe(0);
    const detect = await execa(join(root, 'hello-bp', 'bin', 'detect'), { reject: false });
    expect(detect.exitCode).toBe(0);
    await writeFile(join(root, 'hello.toml'), '[buildpack]\nuri = "hello-bp"\n');
    r = await packfarm([
      'buildpack',
      'package',
      'hello.cnb',
      '--config',
      'hello.toml',
      '--format',
      'file',
      '--json',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(
      (JSON.parse(r.stdout) as { targets: { platform: string }[] }).targets.map((t) => t.platform),
    ).toEqual(['linux/amd64', 'linux/arm64']);
    r = await packfarm(['buildpack', 'inspect', 'hello.cnb']);
    expect(r.stdout).toContain('acme/hello@0.0.1 (api 0.12)');
  });

  it('names the file and field of a bad package.toml', async () => {
    await writeFile(
      join(root, 'bad.toml'),
      '[buildpack]\nuri = "env-consumer"\n[[dependencies]]\nurl = "x"\n',
    );
    let r = await packfarm(['buildpack', 'package', 'x.cnb', '--config', 'bad.toml', '--format', 'file']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(/bad\.toml: invalid content: dependencies\[0\]: .*url/);
    await writeFile(join(root, 'bad.toml'), '[buildpack]\nuri = "consumer.cnb"\n');
    r = await packfarm(['buildpack', 'package', 'x.cnb', '--config', 'bad.toml', '--format', 'file']);
    expect(r.stderr).toContain('bad.toml: buildpack.uri: "consumer.cnb" is a buildpackage');
  });
});
