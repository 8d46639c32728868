import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseToml } from '../../src/util/toml.js';

/**
 * Conformance with the reference lifecycle's own acceptance cases for the detector and the builder
 * (buildpacks/lifecycle acceptance/detector_test.go and builder_test.go): the same situations, set up with
 * our own fixture buildpacks and files, driven through `packfarm lifecycle detector|builder` as a process
 * with the flags and CNB_* variables each case uses, asserting the same outcomes — exit codes, output files
 * and the lines that matter (wording may differ). Buildpack ids with `_` are deliberate: the reference
 * fixtures all use them. Cases the reference covers that packfarm deliberately does not (refusing root, image
 * extensions) are listed as deviations in spec/lifecycle.md and are not here.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PLATFORM_API = '0.15';

let root: string;
let cnb: string;
beforeAll(async () => {
  const tsc = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: repoRoot, encoding: 'utf8' });
  if (!existsSync(join(repoRoot, 'dist', 'cli', 'lifecycle', 'builder.js')))
    throw new Error(`building dist/ failed:\n${tsc.stdout}\n${tsc.stderr}`);
  root = await mkdtemp(join(tmpdir(), 'packfarm-conformance-'));
  cnb = join(root, 'cnb');
  await writeFixtures(cnb);
}, 180_000);
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function put(path: string, text: string, mode = 0o644): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, text);
  await chmod(path, mode);
}

async function buildpack(
  dir: string,
  id: string,
  version: string,
  api: string,
  scripts: { detect?: string; build?: string },
): Promise<void> {
  const bp = join(dir, id, version);
  await put(
    join(bp, 'buildpack.toml'),
    `api = "${api}"\n[buildpack]\nid = "${id}"\nversion = "${version}"\n`,
  );
  for (const [name, body] of Object.entries(scripts))
    await put(join(bp, 'bin', name), `#!/bin/sh\n${body}\n`, 0o755);
}

const order = (...groups: string[][]) =>
  groups
    .map(
      (g) =>
        `[[order]]\n${g.map((e) => `[[order.group]]\nid = "${e.split('@')[0]}"\nversion = "${e.split('@')[1]}"\n`).join('')}`,
    )
    .join('\n');

/** Our fixtures for the situations of the reference's acceptance tests (not copies of its files). */
async function writeFixtures(dir: string): Promise<void> {
  const bps = join(dir, 'buildpacks');
  // Provides and requires one dependency, with metadata.
  await buildpack(bps, 'simple_buildpack', 'simple_buildpack_version', '0.9', {
    detect:
      'cat >> "$2" <<EOF\n[[provides]]\nname = "some_requirement"\n[[requires]]\nname = "some_requirement"\n[requires.metadata]\nversion = "some_version"\nsome_metadata_key = "some_metadata_val"\nEOF',
  });
  // Passes, providing a dependency; says where it ran.
  await buildpack(bps, 'always_detect_buildpack', 'always_detect_buildpack_version', '0.10', {
    detect:
      'echo "platform_path: $1"\necho "app_dir: $(pwd)"\nprintf \'[[provides]]\\nname = "some_requirement"\\n\' >> "$2"',
  });
  // Another copy of it in a second buildpacks dir, found only through CNB_BUILDPACKS_DIR: passes without a plan.
  await buildpack(
    join(dir, 'custom_buildpacks'),
    'always_detect_buildpack',
    'always_detect_buildpack_version',
    '0.10',
    {
      detect: 'echo "platform_path: $1"\necho "app_dir: $(pwd)"',
    },
  );
  await buildpack(bps, 'fail_detect_buildpack', 'some_version', '0.9', {
    detect: 'echo "Opted out of detection"\nexit 100',
  });
  await buildpack(bps, 'requires_only_buildpack', 'requires_only_version', '0.10', {
    detect:
      'cat >> "$2" <<EOF\n[[requires]]\nname = "some_requirement"\n[requires.metadata]\nversion = "some_version"\nEOF',
  });
  // A Buildpack API no lifecycle supports any more.
  await put(
    join(bps, 'bad_api', 'bad_api_version', 'buildpack.toml'),
    'api = "0.1"\n[buildpack]\nid = "bad_api"\nversion = "bad_api_version"\n',
  );

  const build = (name: string, extra = '') =>
    [
      `echo "---> ${name}"`,
      'echo "CNB_APP_DIR: $(pwd)"',
      'echo "CNB_BUILDPACK_DIR: $CNB_BUILDPACK_DIR"',
      'echo "PLATFORM_DIR: $2"',
      'echo "LAYERS_DIR: $1"',
      'echo "plan contents:"',
      'cat "$3"',
      extra,
    ].join('\n');
  await buildpack(bps, 'hello_world', '0.0.1', '0.10', {
    build: build(
      'hello world',
      'cat > "$1/launch.toml" <<EOF\n[[processes]]\ntype = "hello"\ncommand = ["echo world"]\nargs = ["arg1"]\nEOF',
    ),
  });
  await buildpack(bps, 'hello_world_2', '0.0.2', '0.10', { build: build('hello world 2') });
  await buildpack(bps, 'hello_world_3', '0.0.3', '0.10', {
    build: build(
      'hello world 3',
      'echo "CNB_TARGET_ARCH: $CNB_TARGET_ARCH"\necho "CNB_TARGET_ARCH_VARIANT: $CNB_TARGET_ARCH_VARIANT"\necho "CNB_TARGET_OS: $CNB_TARGET_OS"',
    ),
  });
  await buildpack(join(dir, 'other_buildpacks'), 'hello_world', '0.0.1', '0.10', {
    build: build('hello world from another dir'),
  });

  const orders = join(dir, 'orders');
  await put(join(orders, 'simple_order.toml'), order(['simple_buildpack@simple_buildpack_version']));
  await put(
    join(orders, 'always_detect_order.toml'),
    order(['always_detect_buildpack@always_detect_buildpack_version']),
  );
  await put(join(orders, 'fail_detect_order.toml'), order(['fail_detect_buildpack@some_version']));
  await put(join(orders, 'bad_api.toml'), order(['bad_api@bad_api_version']));
  await put(join(orders, 'middle_order.toml'), order(['requires_only_buildpack@requires_only_version']));
  await put(
    join(dir, 'system.toml'),
    '[system.pre]\n[[system.pre.buildpacks]]\nid = "always_detect_buildpack"\nversion = "always_detect_buildpack_version"\n' +
      '[system.post]\n[[system.post.buildpacks]]\nid = "simple_buildpack"\nversion = "simple_buildpack_version"\n',
  );

  const groups = join(dir, 'group_tomls');
  const group = (id: string, version: string, api = '0.10') =>
    `[[group]]\napi = "${api}"\nid = "${id}"\nversion = "${version}"\n`;
  await put(join(groups, 'always_detect_group.toml'), group('hello_world', '0.0.1'));
  await put(join(groups, 'group_buildpack2.toml'), group('hello_world_2', '0.0.2'));
  await put(join(groups, 'empty_group.toml'), '');
  await put(join(groups, 'wrong_group.toml'), 'This is not TOML, and not a group either.\n');
  await put(join(groups, 'invalid_buildpack_api_group.toml'), group('hello_world', '0.0.1', '0.2notanapi'));
  await put(join(groups, 'unsupported_buildpack_api_group.toml'), group('hello_world', '0.0.1', '0.1'));

  const plans = join(dir, 'plan_tomls');
  const plan = (id: string, version: string, require?: string) =>
    `[[entries]]\n[[entries.providers]]\nid = "${id}"\nversion = "${version}"\n` +
    (require ? `[[entries.requires]]\nname = "${require}"\n` : '');
  await put(join(plans, 'always_detect_plan.toml'), plan('hello_world', '0.0.1', 'plan_from_default_path'));
  await put(join(plans, 'plan_buildpack_2.toml'), plan('hello_world_2', '0.0.2', 'plan_for_buildpack_2'));
  await put(join(plans, 'plan_buildpack_3.toml'), plan('hello_world_3', '0.0.3', 'plan_for_buildpack_3'));
  await put(
    join(plans, 'different_plan_from_env.toml'),
    plan('hello_world', '0.0.1', 'plan_from_env_content'),
  );
  await put(join(plans, 'empty_plan.toml'), '');
  await put(join(plans, 'wrong_plan.toml'), 'This is not TOML, and not a plan either.\n');
}

interface Run {
  code: number | null;
  out: string;
}

function lifecycle(phase: string, args: string[], env: Record<string, string>, cwd = root): Promise<Run> {
  return new Promise((done, reject) => {
    const child = spawn(join(repoRoot, 'bin', 'packfarm.js'), ['lifecycle', phase, ...args], {
      cwd,
      env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: root, CNB_PLATFORM_API: PLATFORM_API, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c) => {
      out += c;
    });
    child.stderr.on('data', (c) => {
      out += c;
    });
    child.on('error', reject);
    child.on('close', (code) => done({ code, out }));
  });
}

let n = 0;
/** A fresh /layers, /workspace and /platform for one case. */
async function dirs(): Promise<{ layers: string; app: string; platform: string }> {
  const base = join(root, `case-${++n}`);
  const d = { layers: join(base, 'layers'), app: join(base, 'workspace'), platform: join(base, 'platform') };
  for (const p of Object.values(d)) await mkdir(p, { recursive: true });
  return d;
}

// biome-ignore lint/suspicious/noExplicitAny: TOML documents, checked field by field by the assertions
const readToml = async (path: string) => parseToml(await readFile(path, 'utf8'), path) as Record<string, any>;

describe('detector, as in the reference acceptance tests', () => {
  const detectorEnv = (
    d: { layers: string; app: string; platform: string },
    extra: Record<string, string> = {},
  ) => ({
    CNB_LAYERS_DIR: d.layers,
    CNB_APP_DIR: d.app,
    CNB_PLATFORM_DIR: d.platform,
    CNB_BUILDPACKS_DIR: join(cnb, 'buildpacks'),
    ...extra,
  });

  it('called with arguments: errors', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'detector',
      ['some-arg'],
      detectorEnv(d, { CNB_ORDER_PATH: join(cnb, 'orders', 'simple_order.toml') }),
    );
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/argument/);
  });

  it('no order file at the default locations: errors naming the order', async () => {
    const d = await dirs();
    const r = await lifecycle('detector', [], detectorEnv(d));
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/order/);
  });

  it('no group passes: exit 20, the buildpack output and results, "No buildpack groups passed detection."', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'detector',
      [],
      detectorEnv(d, { CNB_ORDER_PATH: join(cnb, 'orders', 'fail_detect_order.toml') }),
    );
    expect(r.code).toBe(20);
    expect(r.out).toMatch(/Output: fail_detect_buildpack@some_version/);
    expect(r.out).toContain('Opted out of detection');
    expect(r.out).toMatch(/fail: fail_detect_buildpack@some_version/);
    expect(r.out).toContain('No buildpack groups passed detection.');
  });

  it('a group passes: group.toml and plan.toml at the default locations; buildpack ids with "_" are accepted', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'detector',
      [],
      detectorEnv(d, { CNB_ORDER_PATH: join(cnb, 'orders', 'simple_order.toml') }),
    );
    expect(r.code, r.out).toBe(0);
    const group = await readToml(join(d.layers, 'group.toml'));
    expect(group.group[0]).toMatchObject({ id: 'simple_buildpack', version: 'simple_buildpack_version' });
    const plan = await readToml(join(d.layers, 'plan.toml'));
    expect(plan.entries[0].providers[0]).toMatchObject({
      id: 'simple_buildpack',
      version: 'simple_buildpack_version',
    });
    expect(plan.entries[0].requires[0]).toMatchObject({
      name: 'some_requirement',
      metadata: { some_metadata_key: 'some_metadata_val', version: 'some_version' },
    });
    expect(r.out).toMatch(/simple_buildpack\s+simple_buildpack_version/);
    // Detection passed: the per-buildpack results are not shown at info level.
    expect(r.out).not.toMatch(/=+ Results =+/);
    // The id is outside the spec's character set: accepted, with a warning.
    expect(r.out).toMatch(/warn.*simple_buildpack.*_/i);
  });

  it('paths from CNB_* variables (relative group and plan paths from the working dir); an empty plan is 0 bytes', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'detector',
      ['-log-level=debug'],
      {
        CNB_ORDER_PATH: join(cnb, 'orders', 'always_detect_order.toml'),
        CNB_BUILDPACKS_DIR: join(cnb, 'custom_buildpacks'),
        CNB_APP_DIR: d.app,
        CNB_GROUP_PATH: './custom_group.toml',
        CNB_PLAN_PATH: './custom_plan.toml',
        CNB_PLATFORM_DIR: d.platform,
        CNB_LAYERS_DIR: d.layers,
      },
      d.layers,
    );
    expect(r.code, r.out).toBe(0);
    const group = await readToml(join(d.layers, 'custom_group.toml'));
    expect(group.group[0]).toMatchObject({
      id: 'always_detect_buildpack',
      version: 'always_detect_buildpack_version',
    });
    expect((await stat(join(d.layers, 'custom_plan.toml'))).size).toBe(0);
    expect(r.out).toContain(`platform_path: ${d.platform}`);
    expect(r.out).toContain(`app_dir: ${d.app}`);
  });

  it('-order FILE is used when it exists', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'detector',
      ['-log-level=debug', `-order=${join(cnb, 'orders', 'simple_order.toml')}`],
      detectorEnv(d),
    );
    expect(r.code, r.out).toBe(0);
    expect((await readToml(join(d.layers, 'group.toml'))).group[0].id).toBe('simple_buildpack');
  });

  it('-order FILE that does not exist: errors naming it', async () => {
    const d = await dirs();
    const missing = join(root, 'custom', 'order.toml');
    const r = await lifecycle('detector', [`-order=${missing}`], detectorEnv(d));
    expect(r.code).not.toBe(0);
    expect(r.out).toContain(missing);
  });

  it('an order naming a buildpack of an unsupported Buildpack API: exit 12 naming the version', async () => {
    const d = await dirs();
    const r = await lifecycle('detector', [`-order=${join(cnb, 'orders', 'bad_api.toml')}`], detectorEnv(d));
    expect(r.code).toBe(12);
    expect(r.out).toMatch(/0\.1/);
    expect(r.out).toMatch(/bad_api/);
  });

  it('Platform API 0.15 system.toml: system buildpacks prepended and appended, logged at debug level', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'detector',
      ['-log-level=debug'],
      detectorEnv(d, {
        CNB_ORDER_PATH: join(cnb, 'orders', 'middle_order.toml'),
        CNB_SYSTEM_PATH: join(cnb, 'system.toml'),
      }),
    );
    expect(r.code, r.out).toBe(0);
    const group = await readToml(join(d.layers, 'group.toml'));
    expect(group.group.map((e: { id: string }) => e.id)).toEqual([
      'always_detect_buildpack',
      'requires_only_buildpack',
      'simple_buildpack',
    ]);
    expect(r.out).toContain('Prepending 1 system buildpack(s) to group');
    expect(r.out).toContain('Appending 1 system buildpack(s) to group');
  });
});

describe('builder, as in the reference acceptance tests', () => {
  const g = (name: string) => join(cnb, 'group_tomls', name);
  const p = (name: string) => join(cnb, 'plan_tomls', name);
  const builderEnv = (
    d: { layers: string; app: string; platform: string },
    extra: Record<string, string> = {},
  ) => ({
    CNB_LAYERS_DIR: d.layers,
    CNB_APP_DIR: d.app,
    CNB_PLATFORM_DIR: d.platform,
    CNB_BUILDPACKS_DIR: join(cnb, 'buildpacks'),
    ...extra,
  });
  const metadata = async (layers: string) => {
    const path = join(layers, 'config', 'metadata.toml');
    return { text: await readFile(path, 'utf8'), md: await readToml(path) };
  };

  it('called with arguments: errors', async () => {
    const d = await dirs();
    const r = await lifecycle('builder', ['some-arg'], builderEnv(d));
    expect(r.code).not.toBe(0);
    expect(r.out).toMatch(/argument/);
  });

  it('a full group.toml and plan.toml: metadata.toml lists the buildpack and its process', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'builder',
      [],
      builderEnv(d, {
        CNB_GROUP_PATH: g('always_detect_group.toml'),
        CNB_PLAN_PATH: p('always_detect_plan.toml'),
      }),
    );
    expect(r.code, r.out).toBe(0);
    const { md } = await metadata(d.layers);
    expect(md.buildpacks[0]).toMatchObject({ api: '0.10', id: 'hello_world', version: '0.0.1' });
    expect(md.processes).toHaveLength(1);
    expect(md.processes[0]).toMatchObject({
      type: 'hello',
      command: ['echo world'],
      args: ['arg1'],
      direct: true,
    });
    expect(md.processes[0].default ?? false).toBe(false);
    expect(md.processes[0]['working-dir'] ?? '').toBe('');
  });

  it('group.toml not found: errors naming it', async () => {
    const d = await dirs();
    const r = await lifecycle('builder', [], builderEnv(d, { CNB_PLAN_PATH: p('always_detect_plan.toml') }));
    expect(r.code).not.toBe(0);
    expect(r.out).toContain(join(d.layers, 'group.toml'));
  });

  it('an empty group.toml: succeeds with no processes', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'builder',
      [],
      builderEnv(d, { CNB_GROUP_PATH: g('empty_group.toml'), CNB_PLAN_PATH: p('always_detect_plan.toml') }),
    );
    expect(r.code, r.out).toBe(0);
    expect((await metadata(d.layers)).md.processes ?? []).toHaveLength(0);
  });

  it('a group.toml that is not TOML: errors naming the file', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'builder',
      [],
      builderEnv(d, { CNB_GROUP_PATH: g('wrong_group.toml'), CNB_PLAN_PATH: p('always_detect_plan.toml') }),
    );
    expect(r.code).not.toBe(0);
    expect(r.out).toContain(g('wrong_group.toml'));
  });

  it.each([
    ['does not parse', 'invalid_buildpack_api_group.toml', '0.2notanapi'],
    ['is not supported', 'unsupported_buildpack_api_group.toml', '0.1'],
  ])('a group.toml whose buildpack api %s: exit 12 naming the buildpack', async (_what, file, api) => {
    const d = await dirs();
    const r = await lifecycle(
      'builder',
      [],
      builderEnv(d, { CNB_GROUP_PATH: g(file), CNB_PLAN_PATH: p('always_detect_plan.toml') }),
    );
    expect(r.code, r.out).toBe(12);
    expect(r.out).toContain('hello_world@0.0.1');
    expect(r.out).toContain(api);
    expect(r.out).not.toContain('---> hello world');
  });

  it('plan.toml not found: errors naming it', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'builder',
      [],
      builderEnv(d, { CNB_GROUP_PATH: g('always_detect_group.toml') }),
    );
    expect(r.code).not.toBe(0);
    expect(r.out).toContain(join(d.layers, 'plan.toml'));
  });

  it('an empty plan.toml: succeeds', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'builder',
      [],
      builderEnv(d, { CNB_GROUP_PATH: g('always_detect_group.toml'), CNB_PLAN_PATH: p('empty_plan.toml') }),
    );
    expect(r.code, r.out).toBe(0);
    expect((await metadata(d.layers)).md.buildpacks[0]).toMatchObject({
      id: 'hello_world',
      version: '0.0.1',
    });
  });

  it('a plan.toml that is not TOML: errors naming the file', async () => {
    const d = await dirs();
    const r = await lifecycle(
      'builder',
      [],
      builderEnv(d, { CNB_GROUP_PATH: g('always_detect_group.toml'), CNB_PLAN_PATH: p('wrong_plan.toml') }),
    );
    expect(r.code).not.toBe(0);
    expect(r.out).toContain(p('wrong_plan.toml'));
  });

  it('group.toml and plan.toml default to the layers dir; entries with providers but no requires read as empty', async () => {
    const d = await dirs();
    await writeFile(
      join(d.layers, 'group.toml'),
      '[[group]]\napi = "0.10"\nid = "hello_world_2"\nversion = "0.0.2"\n',
    );
    await writeFile(
      join(d.layers, 'plan.toml'),
      '[[entries]]\n[[entries.providers]]\nid = "hello_world_2"\nversion = "0.0.2"\n',
    );
    const r = await lifecycle('builder', [], builderEnv(d));
    expect(r.code, r.out).toBe(0);
    expect((await metadata(d.layers)).md.buildpacks[0]).toMatchObject({
      api: '0.10',
      id: 'hello_world_2',
      version: '0.0.2',
    });
  });

  it('plan.toml defaults to the layers dir when only the group path is given', async () => {
    const d = await dirs();
    await writeFile(
      join(d.layers, 'plan.toml'),
      '[[entries]]\n[[entries.providers]]\nid = "hello_world_2"\nversion = "0.0.2"\n',
    );
    const r = await lifecycle('builder', [], builderEnv(d, { CNB_GROUP_PATH: g('group_buildpack2.toml') }));
    expect(r.code, r.out).toBe(0);
    expect((await metadata(d.layers)).md.buildpacks[0].id).toBe('hello_world_2');
  });

  it('passes CNB_APP_DIR, CNB_BUILDPACKS_DIR, CNB_LAYERS_DIR, CNB_PLAN_PATH and CNB_PLATFORM_DIR on to the buildpack', async () => {
    const d = await dirs();
    const other = join(cnb, 'other_buildpacks');
    const r = await lifecycle(
      'builder',
      [],
      builderEnv(d, {
        CNB_GROUP_PATH: g('always_detect_group.toml'),
        CNB_PLAN_PATH: p('different_plan_from_env.toml'),
        CNB_BUILDPACKS_DIR: other,
      }),
    );
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain(`CNB_APP_DIR: ${d.app}`);
    expect(r.out).toContain(`CNB_BUILDPACK_DIR: ${join(other, 'hello_world', '0.0.1')}`);
    expect(r.out).toContain(`LAYERS_DIR: ${join(d.layers, 'hello_world')}`);
    expect(r.out).toContain('name = "plan_from_env_content"');
    expect(r.out).toContain(`PLATFORM_DIR: ${d.platform}`);
  });

  it('sets CNB_TARGET_* from analyzed.toml', async () => {
    const d = await dirs();
    await writeFile(
      join(d.layers, 'group.toml'),
      '[[group]]\napi = "0.10"\nid = "hello_world_3"\nversion = "0.0.3"\n',
    );
    await writeFile(
      join(d.layers, 'analyzed.toml'),
      '[run-image.target]\nid = "my id"\nos = "linux"\narch = "amd64"\narch-variant = "some-variant"\n[run-image.target.distro]\nname = "ubuntu"\nversion = "some-version"\n',
    );
    const r = await lifecycle('builder', [], builderEnv(d, { CNB_PLAN_PATH: p('plan_buildpack_3.toml') }));
    expect(r.code, r.out).toBe(0);
    expect(r.out).toContain('CNB_TARGET_ARCH: amd64');
    expect(r.out).toContain('CNB_TARGET_ARCH_VARIANT: some-variant');
    expect(r.out).toContain('CNB_TARGET_OS: linux');
  });
});
