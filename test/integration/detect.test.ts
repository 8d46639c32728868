import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type DetectEvent, type DetectOptions, detect } from '../../src/phase/detect.js';
import type { RunImageTarget } from '../../src/platform/target.js';
import { PackfarmError } from '../../src/util/errors.js';
import { createLogger } from '../../src/util/log.js';
import { parseToml } from '../../src/util/toml.js';

/**
 * The detect phase through its TypeScript API, with real bin/detect processes from
 * test/fixtures/buildpacks/detect (shell scripts laid out as <id with / as _>/<version>/).
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildpacksDir = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'detect', 'buildpacks');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-detect-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Workspace {
  app: string;
  platform: string;
  layers: string;
  buildConfig: string;
}

let n = 0;
async function workspace(
  appFiles: Record<string, string> = {},
  userEnv: Record<string, string> = {},
): Promise<Workspace> {
  const dir = join(root, `w${++n}`);
  const ws = {
    app: join(dir, 'workspace'),
    platform: join(dir, 'platform'),
    layers: join(dir, 'layers'),
    buildConfig: join(dir, 'build-config'),
  };
  await mkdir(ws.app, { recursive: true });
  await mkdir(join(ws.platform, 'env'), { recursive: true });
  await mkdir(ws.layers, { recursive: true });
  for (const [name, text] of Object.entries(appFiles)) await writeFile(join(ws.app, name), text);
  for (const [name, text] of Object.entries(userEnv)) await writeFile(join(ws.platform, 'env', name), text);
  return ws;
}

type G = (string | [string, 'optional'])[];
const order = (...groups: G[]) =>
  groups.map((g) => ({
    group: g.map((e) =>
      typeof e === 'string'
        ? { id: e, version: '1.0.0', optional: false }
        : { id: e[0], version: '1.0.0', optional: true },
    ),
  }));

const arm64Jammy: RunImageTarget = {
  os: 'linux',
  arch: 'arm64',
  distro: { name: 'ubuntu', version: '22.04' },
};

async function run(ws: Workspace, opts: Partial<DetectOptions>) {
  const lines: string[] = [];
  const events: DetectEvent[] = [];
  const result = await detect({
    appDir: ws.app,
    platformDir: ws.platform,
    buildpacksDir,
    groupPath: join(ws.layers, 'group.toml'),
    planPath: join(ws.layers, 'plan.toml'),
    target: arm64Jammy,
    logger: createLogger({ level: 'info', write: (l) => lines.push(l) }),
    onEvent: (e) => events.push(e),
    ...opts,
  });
  return { result, lines, events };
}

async function failure(ws: Workspace, opts: Partial<DetectOptions>) {
  const lines: string[] = [];
  try {
    await detect({
      appDir: ws.app,
      platformDir: ws.platform,
      buildpacksDir,
      target: arm64Jammy,
      groupPath: join(ws.layers, 'group.toml'),
      logger: createLogger({ level: 'info', write: (l) => lines.push(l) }),
      ...opts,
    });
  } catch (err) {
    if (!(err instanceof PackfarmError)) throw err;
    return { err, lines };
  }
  throw new Error('detect passed but was expected to fail');
}

const ids = (group: { id: string }[]) => group.map((g) => g.id);

describe('detect: groups and build plans', () => {
  it('selects the first passing group and writes group.toml and plan.toml', async () => {
    const ws = await workspace({ 'package.json': '{}', '.node-version': '18' });
    const { result, lines } = await run(ws, { order: order(['test/python'], ['test/node', 'test/npm']) });
    expect(ids(result.group)).toEqual(['test/node', 'test/npm']);
    expect(result.groupsTried).toBe(2);
    expect(await readFile(join(ws.layers, 'group.toml'), 'utf8')).toBe(
      [
        '[[group]]',
        'id = "test/node"',
        'version = "1.0.0"',
        'api = "0.12"',
        'homepage = "https://example.test/node"',
        '',
        '[[group]]',
        'id = "test/npm"',
        'version = "1.0.0"',
        'api = "0.12"',
        '',
      ].join('\n'),
    );
    expect(parseToml(await readFile(join(ws.layers, 'plan.toml'), 'utf8'), 'plan.toml')).toEqual({
      entries: [
        {
          providers: [{ id: 'test/node', version: '1.0.0' }],
          requires: [
            { name: 'node', metadata: { version: '18' } },
            { name: 'node', metadata: { build: true } },
          ],
        },
        { providers: [{ id: 'test/npm', version: '1.0.0' }], requires: [{ name: 'npm' }] },
      ],
    });
    // Success shows the group, not the buildpacks' output (that is debug-level).
    expect(lines).toEqual(['test/node 1.0.0', 'test/npm  1.0.0']);
  });

  it('resolves [[or]] alternatives', async () => {
    const ws = await workspace();
    const { result } = await run(ws, { order: order(['test/or-provider', 'test/needs-b']) });
    expect(result.plan.entries).toEqual([
      { providers: [{ id: 'test/or-provider', version: '1.0.0' }], requires: [{ name: 'b' }] },
    ]);
  });

  it('drops optional buildpacks that fail or do not fit the plan', async () => {
    const ws = await workspace({ 'package.json': '{}' });
    const { result, lines } = await run(ws, {
      order: order(['test/node', ['test/unused', 'optional'], ['test/fail', 'optional'], 'test/npm']),
    });
    expect(ids(result.group)).toEqual(['test/node', 'test/npm']);
    // Like the reference lifecycle, the count includes the optional buildpack that failed detect.
    expect(lines[0]).toBe('2 of 4 buildpacks participating');
  });

  it('expands composite buildpacks, nested and optional', async () => {
    const py = await workspace({ 'requirements.txt': '' });
    const a = await run(py, { order: order(['test/js']) });
    expect(ids(a.result.group)).toEqual(['test/python']);
    expect(a.result.groupsTried).toBe(2);
    // test/outer = [test/unused (optional), test/js]; test/unused provides something nobody needs.
    const b = await run(py, { order: order(['test/outer', ['test/js', 'optional'], 'test/env-probe']) });
    expect(ids(b.result.group)).toEqual(['test/python', 'test/env-probe']);
    // An optional composite that never passes is skipped: the copy of the group without it is tried last.
    const empty = await workspace();
    const c = await run(empty, {
      order: order(['test/or-provider', ['test/js', 'optional'], 'test/needs-b']),
    });
    expect(ids(c.result.group)).toEqual(['test/or-provider', 'test/needs-b']);
    expect(c.result.groupsTried).toBe(3);
  });

  it('runs each buildpack once per detection, however many groups list it', async () => {
    const ws = await workspace();
    const groups = Array.from({ length: 10 }, () => ['test/fail', 'test/or-provider'] as G);
    const { result, events } = await run(ws, {
      order: order(...groups, ['test/or-provider', 'test/needs-b']),
    });
    expect(result.groupsTried).toBe(11);
    const runs = events.filter((e) => e.type === 'buildpack').map((e) => (e as { id: string }).id);
    expect(runs.sort()).toEqual(['test/fail', 'test/needs-b', 'test/or-provider']);
  });

  it('skips a buildpack listed twice in one group after composite expansion', async () => {
    const ws = await workspace({ 'package.json': '{}' });
    const { result, events } = await run(ws, { order: order(['test/node', 'test/js']) });
    expect(ids(result.group)).toEqual(['test/node', 'test/npm']);
    expect(events).toContainEqual({
      type: 'buildpack-skipped',
      id: 'test/node',
      version: '1.0.0',
      reason: 'duplicate',
    });
  });
});

describe('detect: exit codes', () => {
  it('20 when every group fails without errors, with the buffered output shown', async () => {
    const ws = await workspace();
    const { err, lines } = await failure(ws, { order: order(['test/fail'], ['test/node']) });
    expect(err.exitCode).toBe(20);
    expect(err.code).toBe('DETECT_FAILED');
    expect(lines).toContain('fail: not for this app');
    expect(lines).toContain('fail: test/fail@1.0.0');
  });

  it('21 when every group fails and a buildpack errored', async () => {
    const ws = await workspace();
    const { err, lines } = await failure(ws, { order: order(['test/fail'], ['test/error']) });
    expect(err.exitCode).toBe(21);
    expect(lines).toContain('error: boom');
    expect(lines).toContain('err:  test/error@1.0.0 (3)');
  });

  it('an erroring optional buildpack does not fail a group that otherwise passes', async () => {
    const ws = await workspace();
    const { result } = await run(ws, { order: order([['test/error', 'optional'], 'test/env-probe']) });
    expect(ids(result.group)).toEqual(['test/env-probe']);
  });

  it('21 for a plan whose top-level requires version disagrees with metadata.version, naming buildpack and file', async () => {
    const ws = await workspace();
    const { err, lines } = await failure(ws, { order: order(['test/bad-plan']) });
    expect(err.exitCode).toBe(21);
    expect(lines.join('\n')).toMatch(
      /buildpack test\/bad-plan@1.0.0: build plan .*test_bad-plan@1.0.0.plan.toml: requires\[0\] \(ruby\) has "version" = "3.3" and "metadata.version" = "3.2", which disagree/,
    );
  });

  it('21 for a missing or non-executable bin/detect', async () => {
    const ws = await workspace();
    const a = await failure(ws, { order: order(['test/no-detect']) });
    expect(a.err.exitCode).toBe(21);
    expect(a.lines.join('\n')).toMatch(/cannot run .*test_no-detect\/1.0.0\/bin\/detect: no such file/);
    const b = await failure(ws, { order: order(['test/noexec']) });
    expect(b.err.exitCode).toBe(21);
    expect(b.lines.join('\n')).toMatch(/test_noexec\/1.0.0\/bin\/detect: permission denied/);
  });

  it('22 when a composite refers to a buildpack that is not there', async () => {
    const ws = await workspace();
    const { err } = await failure(ws, { order: order(['test/broken-composite']) });
    expect(err.exitCode).toBe(22);
    expect(err.message).toContain('buildpack test/does-not-exist@9.9.9 not found');
  });

  it('12 for an unsupported Buildpack API, before anything runs', async () => {
    const ws = await workspace();
    const { err } = await failure(ws, { order: order(['test/env-probe'], ['test/bad-api']) });
    expect(err.exitCode).toBe(12);
    expect(err.message).toMatch(
      /buildpack test\/bad-api@1.0.0 \(.*buildpack.toml\) declares Buildpack API "0.4"/,
    );
  });

  it('1 for an unreadable buildpack.toml in the order, naming file and field', async () => {
    const ws = await workspace();
    const { err } = await failure(ws, { order: order(['test/malformed']) });
    expect(err.exitCode).toBe(1);
    expect(err.message).toMatch(
      /test_malformed\/1.0.0\/buildpack.toml: invalid content: buildpack\.clear-env/,
    );
  });

  it('refuses image extensions clearly', async () => {
    const ws = await workspace();
    const { err } = await failure(ws, {
      order: { order: order(['test/env-probe']), orderExtensions: order(['ext/x']) },
    });
    expect(err.code).toBe('EXTENSIONS_UNSUPPORTED');
  });
});

describe('detect: targets', () => {
  it('fails a group whose required buildpack has no matching target, as an error (21)', async () => {
    const ws = await workspace();
    const { err, lines } = await failure(ws, { order: order(['test/amd64-ubuntu']) });
    expect(err.exitCode).toBe(21);
    expect(lines.join('\n')).toContain(
      'unable to satisfy target constraints: the build targets linux/arm64 (ubuntu 22.04), buildpack test/amd64-ubuntu@1.0.0 supports linux/amd64 (ubuntu 22.04)',
    );
  });

  it('drops an optional buildpack without a matching target without running it', async () => {
    const ws = await workspace();
    const { result, events } = await run(ws, {
      order: order([['test/amd64-ubuntu', 'optional'], 'test/arm64-only']),
    });
    expect(ids(result.group)).toEqual(['test/arm64-only']);
    expect(events.some((e) => e.type === 'buildpack' && e.id === 'test/amd64-ubuntu')).toBe(false);
  });

  it('matches distros, the arch-variant spelling and deprecated stacks', async () => {
    const ws = await workspace();
    const amd64 = (distro: [string, string]) => ({
      os: 'linux',
      arch: 'amd64',
      distro: { name: distro[0], version: distro[1] },
    });
    expect(
      ids(
        (await run(ws, { order: order(['test/amd64-ubuntu']), target: amd64(['ubuntu', '22.04']) })).result
          .group,
      ),
    ).toEqual(['test/amd64-ubuntu']);
    expect(
      (await failure(ws, { order: order(['test/amd64-ubuntu']), target: amd64(['debian', '12']) })).err
        .exitCode,
    ).toBe(21);

    const armv7 = { os: 'linux', arch: 'arm', variant: 'v7' };
    expect(ids((await run(ws, { order: order(['test/armv7-alias']), target: armv7 })).result.group)).toEqual([
      'test/armv7-alias',
    ]);
    expect(
      (await failure(ws, { order: order(['test/armv7-alias']), target: { ...armv7, variant: 'v6' } })).err
        .exitCode,
    ).toBe(21);

    expect(ids((await run(ws, { order: order(['test/stacks-any']) })).result.group)).toEqual([
      'test/stacks-any',
    ]);
    expect((await failure(ws, { order: order(['test/stacks-bionic']) })).err.exitCode).toBe(21);
    expect(
      ids(
        (await run(ws, { order: order(['test/stacks-bionic']), target: amd64(['ubuntu', '18.04']) })).result
          .group,
      ),
    ).toEqual(['test/stacks-bionic']);
  });

  it('takes the target from analyzed.toml (either variant key)', async () => {
    const ws = await workspace();
    const analyzed = join(ws.layers, 'analyzed.toml');
    await writeFile(
      analyzed,
      '[run-image]\nreference = "r@sha256:0"\n[run-image.target]\nos = "linux"\narch = "arm"\nvariant = "v7"\n[run-image.target.distro]\nname = "debian"\nversion = "12"\n',
    );
    const { result } = await run(ws, {
      order: order(['test/armv7-alias', 'test/env-probe']),
      target: undefined,
      analyzedPath: analyzed,
    });
    expect(result.target).toEqual({
      os: 'linux',
      arch: 'arm',
      variant: 'v7',
      distro: { name: 'debian', version: '12' },
    });
    const probe = result.plan.entries[0]?.requires[0]?.metadata;
    expect(probe).toMatchObject({
      target_os: 'linux',
      target_arch: 'arm',
      target_arch_variant: 'v7',
      target_distro_name: 'debian',
      target_distro_version: '12',
    });
  });
});

describe('detect: the environment of bin/detect', () => {
  it('gives inputs, platform env (unless clear-env), operator env, targets by API, and nothing else of the host', async () => {
    const ws = await workspace({}, { USER_VAR: 'from-platform' });
    await mkdir(join(ws.buildConfig, 'env'), { recursive: true });
    await writeFile(join(ws.buildConfig, 'env', 'OPERATOR_VAR'), 'from-operator');
    const probes: Record<string, Record<string, unknown>> = {};
    for (const id of ['test/env-probe', 'test/env-probe-clear', 'test/env-probe-old']) {
      const { result } = await run(ws, {
        order: order([id]),
        buildConfigDir: ws.buildConfig,
        hostEnv: { PATH: process.env.PATH, HOME: '/home/cnb', HOST_SECRET: 'leak' },
      });
      probes[id] = result.plan.entries[0]?.requires[0]?.metadata ?? {};
    }
    const bpDir = (id: string) => join(buildpacksDir, id.replace('/', '_'), '1.0.0');
    expect(probes['test/env-probe']).toEqual({
      id: 'test_env-probe',
      target_os: 'linux',
      target_arch: 'arm64',
      target_arch_variant: '<unset>',
      target_distro_name: 'ubuntu',
      target_distro_version: '22.04',
      exec_env: 'production',
      buildpack_dir: bpDir('test/env-probe'),
      platform_dir: ws.platform,
      arg_platform: ws.platform,
      arg_plan_is_env_plan: 'yes',
      plan_was_empty: 'yes',
      cwd: ws.app,
      user_var: 'from-platform',
      operator_var: 'from-operator',
      host_secret: '<unset>',
      home: '/home/cnb',
    });
    expect(probes['test/env-probe-clear']).toMatchObject({
      user_var: '<unset>',
      operator_var: 'from-operator',
    });
    // Buildpack API 0.9: no CNB_TARGET_* (0.10) and no CNB_EXEC_ENV (0.12).
    expect(probes['test/env-probe-old']).toMatchObject({
      target_os: '<unset>',
      target_arch: '<unset>',
      exec_env: '<unset>',
      user_var: 'from-platform',
    });
  });

  it('skips buildpacks that do not support the execution environment (Platform API 0.15)', async () => {
    const ws = await workspace();
    const a = await run(ws, { order: order(['test/test-only'], ['test/env-probe']), execEnv: 'production' });
    expect(ids(a.result.group)).toEqual(['test/env-probe']);
    const b = await run(ws, { order: order(['test/test-only'], ['test/env-probe']), execEnv: 'test' });
    expect(ids(b.result.group)).toEqual(['test/test-only']);
    const c = await run(ws, { order: order(['test/env-probe']), execEnv: 'test' });
    expect(c.result.plan.entries[0]?.requires[0]?.metadata?.exec_env).toBe('test');
    // Platform API 0.14 knows no execution environments: the buildpack runs.
    const d = await run(ws, { order: order(['test/test-only']), execEnv: 'production', platformApi: '0.14' });
    expect(ids(d.result.group)).toEqual(['test/test-only']);
  });
});
