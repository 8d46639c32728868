import { cp, mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseBuildpackPlan } from '../../src/buildpack/build.js';
import type { GroupFile, PlanFile } from '../../src/platform/files.js';
import { readBuildMetadata } from '../../src/platform/metadata.js';
import { type BuildEvent, type BuildOptions, build } from '../../src/phase/build.js';
import { isPackfarmError } from '../../src/util/errors.js';
import type { ErrorCode } from '../../src/util/error-codes.js';

/**
 * The build phase end to end through the TypeScript API: real fixture buildpacks (POSIX sh scripts) run as
 * child processes by the host executor, against a real layers dir.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildpacksDir = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'build');
const appFixture = join(repoRoot, 'test', 'fixtures', 'apps', 'build-basic');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-build-phase-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Workspace {
  app: string;
  layers: string;
  platform: string;
  buildConfig: string;
}

let counter = 0;
async function workspace(userEnv: Record<string, string> = {}): Promise<Workspace> {
  const dir = join(root, `ws${++counter}`);
  const ws = {
    app: join(dir, 'workspace'),
    layers: join(dir, 'layers'),
    platform: join(dir, 'platform'),
    buildConfig: join(dir, 'build-config'),
  };
  await cp(appFixture, ws.app, { recursive: true });
  await mkdir(ws.layers, { recursive: true });
  await mkdir(join(ws.platform, 'env'), { recursive: true });
  for (const [k, v] of Object.entries(userEnv)) await writeFile(join(ws.platform, 'env', k), v);
  return ws;
}

const group = (...ids: string[]): GroupFile => ({
  group: ids.map((id) => ({ id, version: '1.0.0', api: id === 'test/processes-override' ? '0.9' : '0.12' })),
});

const HOST_ENV = {
  PATH: '/usr/local/bin:/usr/bin:/bin',
  HOME: '/tmp/home-for-test',
  SECRET_TOKEN: 'must not reach buildpacks',
  BP_FROM_HOST: 'must not reach buildpacks either',
};

async function runBuild(ws: Workspace, g: GroupFile, extra: Partial<BuildOptions> = {}) {
  const events: BuildEvent[] = [];
  const result = await build({
    appDir: ws.app,
    layersDir: ws.layers,
    platformDir: ws.platform,
    buildpacksDir,
    group: g,
    plan: { entries: [] },
    target: { os: 'linux', arch: 'amd64', distro: { name: 'debian', version: '12' } },
    hostEnv: HOST_ENV,
    onEvent: (e) => events.push(e),
    ...extra,
  });
  return { result, events };
}

async function report(ws: Workspace, bp: string): Promise<Record<string, string>> {
  const dir = join(ws.layers, bp.replace('/', '_'), 'report');
  const out: Record<string, string> = {};
  for (const name of await readdir(dir)) out[name] = await readFile(join(dir, name), 'utf8');
  return out;
}

async function expectBuildError(p: Promise<unknown>, code: ErrorCode, exitCode: number): Promise<Error> {
  const err = await p.then(
    () => undefined,
    (e: unknown) => e,
  );
  expect(isPackfarmError(err, code), `expected ${code}, got ${String(err)}`).toBe(true);
  expect((err as { exitCode: number }).exitCode).toBe(exitCode);
  return err as Error;
}

describe('build phase: environment seen by later buildpacks', () => {
  let ws: Workspace;
  let seen: Record<string, string>;
  let cleared: Record<string, string>;
  let events: BuildEvent[];

  beforeAll(async () => {
    ws = await workspace({ USER_VAR: 'from-user', USER_PLAIN: 'plain', PATH: '/user/bin' });
    await mkdir(join(ws.buildConfig, 'env'), { recursive: true });
    await writeFile(join(ws.buildConfig, 'env', 'OPERATOR_VAR'), 'operator');
    await writeFile(join(ws.buildConfig, 'env', 'DEF'), 'operator-default-loses');
    const r = await runBuild(ws, group('test/env-provider', 'test/env-consumer', 'test/clear-env'), {
      buildConfigDir: ws.buildConfig,
      execEnv: 'test',
    });
    events = r.events;
    seen = await report(ws, 'test/env-consumer');
    cleared = await report(ws, 'test/clear-env');
  });

  it('applies every env file suffix in order', () => {
    expect(seen.JOINED).toBe('base,more,build'); // override, then append with a layer-wide .delim (env/ + env.build/)
    expect(seen.PRE).toBe('p2:p1'); // prepend: the later layer ends up first
    expect(seen.DEF).toBe('first'); // default: the earlier layer wins (operator default comes after and loses)
    expect(seen.OVR).toBe('b'); // no suffix = override: later layer wins
    expect(seen.OVR2).toBe('b-build'); // env.build overrides env of the same layer
    expect(seen.BUILD_ONLY).toBe('build-only');
    expect(seen.RAW).toBe('  spaced value\n'); // no trimming
  });

  it('hides launch-only, cache-only and untyped layers and env.launch/', () => {
    expect(seen.LAUNCH_ONLY).toBeUndefined();
    expect(seen.NOT_FOR_BUILD).toBeUndefined();
    expect(seen.CACHE_ONLY).toBeUndefined();
    expect(seen.SCRATCH).toBeUndefined();
  });

  it('puts build layer dirs on the path variables, user PATH first', () => {
    const a = join(ws.layers, 'test_env-provider', 'a-base');
    const b = join(ws.layers, 'test_env-provider', 'b-more');
    expect(seen.PATH).toBe(`/user/bin:${a}/bin:${b}/bin:${HOST_ENV.PATH}`);
    expect(seen.LD_LIBRARY_PATH).toBe(`${a}/lib`);
    expect(seen.LIBRARY_PATH).toBe(`${a}/lib`);
    expect(seen.CPATH).toBe(`${a}/include`);
    expect(seen.PKG_CONFIG_PATH).toBe(`${a}/pkgconfig`);
    expect(seen.tool).toBe('provider-tool-ran\n');
  });

  it('user env overrides buildpack env, operator env applies, host env is filtered', () => {
    expect(seen.USER_VAR).toBe('from-user');
    expect(seen.USER_PLAIN).toBe('plain');
    expect(seen.OPERATOR_VAR).toBe('operator');
    expect(seen.HOME).toBe(HOST_ENV.HOME);
    expect(seen.SECRET_TOKEN).toBeUndefined();
  });

  it('passes the CNB_* inputs, positional args and the app dir as cwd', () => {
    const bpLayers = join(ws.layers, 'test_env-consumer');
    expect(seen.CNB_LAYERS_DIR).toBe(bpLayers);
    expect(seen.CNB_PLATFORM_DIR).toBe(ws.platform);
    expect(seen.CNB_BUILDPACK_DIR).toBe(join(buildpacksDir, 'test_env-consumer', '1.0.0'));
    expect(seen.CNB_TARGET_OS).toBe('linux');
    expect(seen.CNB_TARGET_ARCH).toBe('amd64');
    expect(seen.CNB_EXEC_ENV).toBe('test');
    expect(seen.args).toBe(`${bpLayers}\n${ws.platform}\n${seen.CNB_BP_PLAN_PATH}\n`);
    expect(seen.cwd).toBe(`${ws.app}\n`);
  });

  it('clear-env hides user variables but keeps the files and buildpack env', () => {
    expect(cleared.USER_VAR).toBe('user cannot change me'); // the provider's value, not the user's
    expect(cleared.USER_PLAIN).toBeUndefined();
    expect(cleared['user-plain-file']).toBe('plain');
    expect(cleared.JOINED).toBe('base,more,build');
    expect(cleared.PATH?.startsWith('/user/bin')).toBe(false);
    expect(cleared.OPERATOR_VAR).toBe('operator');
  });

  it('renames untyped layer dirs to .ignore and leaves toml-less dirs alone', async () => {
    const entries = (await readdir(join(ws.layers, 'test_env-provider'))).sort();
    expect(entries).toContain('scratch.ignore');
    expect(entries).not.toContain('scratch');
    expect(await stat(join(ws.layers, 'test_env-consumer', 'report'))).toBeTruthy();
  });

  it('streams each buildpack output line by line, stdout and stderr apart', () => {
    const lines = events.filter((e) => e.type === 'buildpack-output');
    expect(lines).toContainEqual({
      type: 'buildpack-output',
      id: 'test/env-consumer',
      stream: 'stderr',
      line: 'a warning on stderr',
    });
    expect(events.filter((e) => e.type === 'buildpack-start').map((e) => e.id)).toEqual([
      'test/env-provider',
      'test/env-consumer',
      'test/clear-env',
    ]);
  });
});

describe('build phase: processes, layers, SBOM, store', () => {
  let ws: Workspace;
  let result: Awaited<ReturnType<typeof build>>;
  beforeAll(async () => {
    ws = await workspace();
    ({ result } = await runBuild(ws, group('test/processes', 'test/processes-override'), {
      platformApi: '0.15',
    }));
  });

  it('writes metadata.toml with merged processes, default, slices, labels and buildpacks', async () => {
    const md = await readBuildMetadata(join(ws.layers, 'config', 'metadata.toml'));
    expect(md.buildpacks).toEqual([
      { id: 'test/processes', version: '1.0.0', api: '0.12' },
      { id: 'test/processes-override', version: '1.0.0', api: '0.9' },
    ]);
    expect(md.processes).toEqual([
      {
        type: 'task',
        command: ['/bin/echo', 'task'],
        args: [],
        direct: true,
        workingDir: undefined,
        execEnv: ['*'],
        buildpackId: 'test/processes-override',
      },
      {
        type: 'web',
        command: ['/bin/echo', 'overridden'],
        args: [],
        direct: true,
        workingDir: undefined,
        execEnv: ['*'],
        buildpackId: 'test/processes-override',
      },
      {
        type: 'worker',
        command: ['runtime'],
        args: ['--work'],
        direct: true,
        workingDir: undefined,
        execEnv: ['production', 'test'],
        buildpackId: 'test/processes',
      },
    ]);
    expect(md.buildpackDefaultProcessType).toBe('task');
    expect(md.slices).toEqual([{ paths: ['static/*'] }]);
    expect(md.labels).toEqual([
      { key: 'io.packfarm.test.label', value: 'from-processes' },
      { key: 'io.packfarm.test.label', value: 'from-override' },
    ]);
    expect(result.metadata.processes).toHaveLength(3);
  });

  it('records layers with types, metadata and exec.d, and the store', () => {
    const out = result.buildpacks[0]!;
    const runtime = out.layers.find((l) => l.name === 'runtime')!;
    expect(runtime.types).toEqual({ launch: true, build: false, cache: true });
    expect(runtime.metadata).toEqual({ version: '1.2.3' });
    expect(runtime.execD).toEqual({ all: ['greet'], byProcess: { web: ['web-only'] } });
    expect(out.store).toEqual({ metadata: { runs: 1 } });
  });

  it('copies SBOMs to the platform layout', async () => {
    const sbom = join(ws.layers, 'sbom');
    const read = (...p: string[]) => readFile(join(sbom, ...p), 'utf8');
    expect(await read('launch', 'test_processes', 'runtime', 'sbom.cdx.json')).toContain('"runtime"');
    expect(await read('cache', 'test_processes', 'runtime', 'sbom.cdx.json')).toContain('"runtime"');
    expect(await read('launch', 'test_processes', 'sbom.cdx.json')).toContain('"app"');
    expect(await read('build', 'test_processes', 'sbom.cdx.json')).toContain('"compiler"');
  });

  it('a rebuild in the same layers dir sees store.toml and replaces old SBOMs', async () => {
    await writeFile(join(ws.layers, 'sbom', 'stale'), 'x');
    const again = await runBuild(ws, group('test/processes'));
    expect(again.result.buildpacks[0]?.store).toEqual({ metadata: { runs: 2 } });
    await expect(stat(join(ws.layers, 'sbom', 'stale'))).rejects.toThrow();
  });
});

describe('build phase: unmet plan entries', () => {
  const plan: PlanFile = {
    entries: [
      {
        providers: [
          { id: 'test/dep-provider', version: '1.0.0' },
          { id: 'test/dep-taker', version: '1.0.0' },
        ],
        requires: [{ name: 'dep', metadata: { version: '1.0' } }],
      },
    ],
  };
  const received = async (ws: Workspace, bp: string) =>
    parseBuildpackPlan(await readFile(join(ws.layers, bp, 'received-plan'), 'utf8'), bp);

  it('a met entry is not passed to later providers', async () => {
    const ws = await workspace();
    const r = await runBuild(ws, group('test/dep-provider', 'test/dep-taker'), { plan });
    expect(await received(ws, 'test_dep-provider')).toEqual([{ name: 'dep', metadata: { version: '1.0' } }]);
    expect(await received(ws, 'test_dep-taker')).toEqual([]);
    expect(r.result.buildpacks[0]?.met).toEqual(['dep']);
  });

  it('an unmet entry goes to the next buildpack that provided it', async () => {
    const ws = await workspace({ UNMET: '1' });
    const r = await runBuild(ws, group('test/dep-provider', 'test/dep-taker'), { plan });
    expect(await received(ws, 'test_dep-taker')).toEqual([{ name: 'dep', metadata: { version: '1.0' } }]);
    expect(r.result.buildpacks[0]?.met).toEqual([]);
    expect(r.result.buildpacks[1]?.met).toEqual(['dep']);
  });
});

describe('build phase: errors', () => {
  it('a failing bin/build is exit 51 naming the buildpack; its output was streamed', async () => {
    const ws = await workspace();
    const events: BuildEvent[] = [];
    const err = await expectBuildError(
      build({
        appDir: ws.app,
        layersDir: ws.layers,
        platformDir: ws.platform,
        buildpacksDir,
        group: group('test/fails', 'test/env-consumer'),
        plan: { entries: [] },
        hostEnv: HOST_ENV,
        onEvent: (e) => events.push(e),
      }),
      'BUILDPACK_BUILD_FAILED',
      51,
    );
    expect(err.message).toContain('test/fails@1.0.0');
    expect(err.message).toContain('status 3');
    expect(events).toContainEqual({
      type: 'buildpack-output',
      id: 'test/fails',
      stream: 'stderr',
      line: 'compiler exploded',
    });
    expect(events.some((e) => e.type === 'buildpack-start' && e.id === 'test/env-consumer')).toBe(false);
  });

  it('`direct` in launch.toml is exit 52 naming file, buildpack and field', async () => {
    const ws = await workspace();
    const err = await expectBuildError(runBuild(ws, group('test/bad-launch')), 'INVALID_LAUNCH_TOML', 52);
    expect(err.message).toContain(join(ws.layers, 'test_bad-launch', 'launch.toml'));
    expect(err.message).toContain('test/bad-launch');
    expect(err.message).toContain('processes[0].direct');
  });

  it('top-level layer types are exit 52 naming the file', async () => {
    const ws = await workspace();
    const err = await expectBuildError(runBuild(ws, group('test/bad-layer')), 'INVALID_LAYER_METADATA', 52);
    expect(err.message).toContain(join(ws.layers, 'test_bad-layer', 'old.toml'));
  });

  it('an SBOM of an undeclared media type is exit 52', async () => {
    const ws = await workspace();
    const err = await expectBuildError(
      runBuild(ws, group('test/sbom-undeclared')),
      'SBOM_UNDECLARED_FORMAT',
      52,
    );
    expect(err.message).toContain('application/spdx+json');
  });

  it('a bin/build without execute permission is a clear buildpack error', async () => {
    const ws = await workspace();
    const err = await expectBuildError(
      runBuild(ws, group('test/not-executable')),
      'BUILDPACK_NOT_EXECUTABLE',
      51,
    );
    expect(err.message).toMatch(/bin\/build is not an executable file \(mode 0644\)/);
    expect((err as { hint?: string }).hint).toMatch(/chmod \+x/);
  });

  it('a composite buildpack in group.toml is exit 52', async () => {
    const ws = await workspace();
    const err = await expectBuildError(runBuild(ws, group('test/composite')), 'COMPOSITE_IN_GROUP', 52);
    expect(err.message).toContain('test/composite@1.0.0');
  });

  it('an unknown buildpack is exit 52, an unsupported Platform API exit 11', async () => {
    const ws = await workspace();
    await expectBuildError(
      runBuild(ws, { group: [{ id: 'test/missing', version: '9.9.9', api: '0.12' }] }),
      'BUILDPACK_NOT_FOUND',
      52,
    );
    await expectBuildError(
      runBuild(ws, group('test/env-consumer'), { platformApi: '0.3' }),
      'INCOMPATIBLE_PLATFORM_API',
      11,
    );
  });
});
