import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ExecResult, ExecSpec, Executor } from '../exec/executor.js';
import { PackfarmError } from '../util/errors.js';
import { parseBuildpackDescriptor } from './descriptor.js';
import { type DetectEnvInputs, detectEnv, runDetect, verdictOf } from './detect.js';

const descriptor = (api: string, extra = '') =>
  parseBuildpackDescriptor(`api = "${api}"\n[buildpack]\nid = "acme/x"\nversion = "1.0.0"\n${extra}`, {
    source: '/bps/acme_x/1.0.0/buildpack.toml',
    dir: '/bps/acme_x/1.0.0',
  });

const inputs: DetectEnvInputs = {
  hostEnv: { PATH: '/usr/bin', HOME: '/home/cnb', SECRET: 's', CNB_PLATFORM_API: '0.15' },
  userEnv: [
    { fileName: 'PATH', value: '/user/bin' },
    { fileName: 'USER_VAR', value: 'u' },
  ],
  buildConfigEnv: [
    { fileName: 'OP_VAR', value: 'op' },
    { fileName: 'USER_VAR.override', value: 'operator-wins' },
  ],
  platformDir: '/platform',
  targetEnv: { CNB_TARGET_OS: 'linux', CNB_TARGET_ARCH: 'arm64' },
  execEnv: 'production',
};

describe('detectEnv', () => {
  it('layers host allowlist, user env, operator env and the CNB inputs', () => {
    expect(detectEnv(descriptor('0.12'), inputs, '/tmp/plan.toml')).toEqual({
      PATH: '/user/bin:/usr/bin',
      HOME: '/home/cnb',
      USER_VAR: 'operator-wins',
      OP_VAR: 'op',
      CNB_BUILDPACK_DIR: '/bps/acme_x/1.0.0',
      CNB_PLATFORM_DIR: '/platform',
      CNB_BUILD_PLAN_PATH: '/tmp/plan.toml',
      CNB_TARGET_OS: 'linux',
      CNB_TARGET_ARCH: 'arm64',
      CNB_EXEC_ENV: 'production',
    });
  });

  it('leaves out user env with clear-env, targets before 0.10 and exec env before 0.12', () => {
    const env = detectEnv(descriptor('0.9', 'clear-env = true'), inputs, '/p');
    expect(env.PATH).toBe('/usr/bin');
    expect(env.USER_VAR).toBe('operator-wins');
    expect(env.CNB_TARGET_OS).toBeUndefined();
    expect(env.CNB_EXEC_ENV).toBeUndefined();
    expect(detectEnv(descriptor('0.11'), inputs, '/p').CNB_EXEC_ENV).toBeUndefined();
    expect(detectEnv(descriptor('0.11'), inputs, '/p').CNB_TARGET_ARCH).toBe('arm64');
  });
});

describe('runDetect', () => {
  let scratch: string;
  beforeAll(async () => {
    scratch = await mkdtemp(join(tmpdir(), 'rundetect-'));
  });
  afterAll(async () => {
    await rm(scratch, { recursive: true, force: true });
  });

  /** An executor that writes `plan` to the plan path, prints `out` and exits with `result`. */
  function fake(result: ExecResult | Error, plan = '', out = ''): Executor & { specs: ExecSpec[] } {
    const specs: ExecSpec[] = [];
    return {
      kind: 'fake',
      specs,
      async run(spec) {
        specs.push(spec);
        if (result instanceof Error) throw result;
        if (plan) await writeFile(spec.env.CNB_BUILD_PLAN_PATH!, plan);
        if (out) spec.onStdout?.(Buffer.from(out));
        return result;
      },
    };
  }
  const go = (executor: Executor) =>
    runDetect({ ...inputs, executor, descriptor: descriptor('0.12'), appDir: '/app', scratchDir: scratch });

  it('runs bin/detect with the platform dir and a fresh plan file, in the app dir, and reads the plan on pass', async () => {
    const ex = fake({ exitCode: 0 }, '[[provides]]\nname = "x"\n[[requires]]\nname = "x"\n', 'hello\n');
    const o = await go(ex);
    const spec = ex.specs[0]!;
    expect(spec.argv).toEqual(['/bps/acme_x/1.0.0/bin/detect', '/platform', spec.env.CNB_BUILD_PLAN_PATH]);
    expect(spec.argv[2]!.startsWith(scratch)).toBe(true);
    expect(spec.cwd).toBe('/app');
    expect(o.output).toBe('hello\n');
    expect(verdictOf(o)).toBe('pass');
    expect(o.plan?.main.provides).toEqual([{ name: 'x' }]);
  });

  it('ignores the plan of a failing detect and maps other outcomes to errors', async () => {
    const failed = await go(fake({ exitCode: 100 }, 'not toml at all ['));
    expect(verdictOf(failed)).toBe('fail');
    expect(failed.plan).toBeUndefined();
    expect(verdictOf(await go(fake({ exitCode: 1 })))).toBe('error');
    const killed = await go(fake({ exitCode: 137, signal: 'SIGKILL' }));
    expect(verdictOf(killed)).toBe('error');
    expect(killed.error).toBe('bin/detect was killed by SIGKILL');
    const unstartable = await go(fake(new PackfarmError('EXEC_FAILED', 'cannot run /x: no such file')));
    expect(unstartable).toMatchObject({ code: -1, error: 'cannot run /x: no such file' });
    const badPlan = await go(
      fake({ exitCode: 0 }, '[[requires]]\nname = "x"\nversion = "1"\n[requires.metadata]\nversion = "2"\n'),
    );
    expect(verdictOf(badPlan)).toBe('error');
    expect(badPlan.error).toMatch(
      /^buildpack acme\/x@1.0.0: build plan .*: requires\[0\] \(x\) has "version" = "1" and "metadata.version" = "2", which disagree/,
    );
  });
});
