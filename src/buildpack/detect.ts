import { writeFileSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Executor } from '../exec/executor.js';
import { handOver, toExecutorView } from '../exec/view.js';
import { isPackfarmError } from '../util/errors.js';
import { apiAtLeast } from '../util/api-version.js';
import type { BuildpackDescriptor } from './descriptor.js';
import { escapeBuildpackId } from './descriptor.js';
import { applyBuildConfigEnv, applyUserEnv, type EnvFile, envToRecord, newBuildEnv } from './env.js';
import { type DetectPlan, parseDetectPlan } from './plan.js';

/** Exit codes of a buildpack's bin/detect (buildpack.md "Detection"): anything else is an error. */
export const DETECT_PASS = 0;
export const DETECT_FAIL = 100;

/**
 * Running one buildpack's bin/detect (buildpack.md "Detection"): environment, arguments, exit status and the
 * build plan it wrote.
 */

export interface DetectEnvInputs {
  /** The lifecycle's own environment; only the allowlisted variables pass (buildpack/env.ts). */
  hostEnv: Readonly<Record<string, string | undefined>>;
  /** `<platform>/env/` files: set unless the buildpack has `clear-env = true`. */
  userEnv: readonly EnvFile[];
  /** `<build-config>/env/` files: always applied, after user env. */
  buildConfigEnv: readonly EnvFile[];
  platformDir: string;
  /** `CNB_TARGET_*` for the build's target (Buildpack API >= 0.10). */
  targetEnv: Readonly<Record<string, string>>;
  /** `CNB_EXEC_ENV` (Buildpack API >= 0.12); empty = not set. */
  execEnv: string;
}

/** The exact environment bin/detect gets. */
export function detectEnv(
  d: BuildpackDescriptor,
  inputs: DetectEnvInputs,
  planPath: string,
): Record<string, string> {
  const vars = newBuildEnv(inputs.hostEnv);
  if (!d.clearEnv) applyUserEnv(vars, inputs.userEnv);
  applyBuildConfigEnv(vars, inputs.buildConfigEnv);
  vars.set('CNB_BUILDPACK_DIR', d.dir);
  vars.set('CNB_PLATFORM_DIR', inputs.platformDir);
  vars.set('CNB_BUILD_PLAN_PATH', planPath);
  if (apiAtLeast(d.api, '0.10')) for (const [k, v] of Object.entries(inputs.targetEnv)) vars.set(k, v);
  if (apiAtLeast(d.api, '0.12') && inputs.execEnv) vars.set('CNB_EXEC_ENV', inputs.execEnv);
  return envToRecord(vars);
}

export interface RunDetectOptions extends DetectEnvInputs {
  executor: Executor;
  descriptor: BuildpackDescriptor;
  appDir: string;
  /**
   * A directory for this run's per-buildpack plan files. All paths here are the lifecycle's (host) paths; an
   * executor that mounts them elsewhere gets them translated (exec/view.ts), so this dir must lie under one of
   * its mounts (its `hostPaths.scratch`).
   */
  scratchDir: string;
  signal?: AbortSignal;
}

/** The outcome of one bin/detect. `code` is the exit status, or -1 when it could not be run or its plan was bad. */
export interface DetectOutcome {
  code: number;
  /** stdout and stderr, interleaved as they arrived. */
  output: string;
  /** On pass: what the buildpack wrote to its plan file. */
  plan?: DetectPlan;
  /** Why the run counts as an error beyond its exit status (spawn failure, bad plan). */
  error?: string;
  durationMs: number;
}

export type DetectVerdict = 'pass' | 'fail' | 'error';

export function verdictOf(o: DetectOutcome): DetectVerdict {
  if (o.code === DETECT_PASS && !o.error) return 'pass';
  if (o.code === DETECT_FAIL && !o.error) return 'fail';
  return 'error';
}

/**
 * Run `<bp>/bin/detect <platform> <plan>` in the app dir. The plan path is a fresh empty file per buildpack
 * (also passed as the deprecated positional argument). The plan is parsed only when detect passed.
 */
export async function runDetect(opts: RunDetectOptions): Promise<DetectOutcome> {
  const d = opts.descriptor;
  const started = performance.now();
  const planPath = join(opts.scratchDir, `${escapeBuildpackId(d.id)}@${d.version}.plan.toml`);
  // Synchronous on purpose: an empty file costs microseconds, three thread-pool round trips cost more.
  writeFileSync(planPath, '', { mode: 0o644 });
  // A build user other than ours must be able to write it.
  if (opts.executor.user) await handOver(opts.executor, planPath);
  const chunks: Buffer[] = [];
  const onChunk = (c: Buffer) => chunks.push(c);
  const finish = (o: Omit<DetectOutcome, 'durationMs' | 'output'>): DetectOutcome => ({
    ...o,
    output: Buffer.concat(chunks).toString('utf8'),
    durationMs: performance.now() - started,
  });

  const detectPath = join(d.dir, 'bin', 'detect');
  let code: number;
  try {
    const r = await opts.executor.run(
      toExecutorView(opts.executor, {
        argv: [detectPath, opts.platformDir, planPath],
        cwd: opts.appDir,
        env: detectEnv(d, opts, planPath),
        onStdout: onChunk,
        onStderr: onChunk,
        ...(opts.signal ? { signal: opts.signal } : {}),
      }),
    );
    code = r.exitCode;
    if (r.signal) return finish({ code: -1, error: `bin/detect was killed by ${r.signal}` });
  } catch (err) {
    if (isPackfarmError(err)) return finish({ code: -1, error: err.message });
    throw err;
  }
  if (code !== DETECT_PASS) return finish({ code });
  try {
    const plan = parseDetectPlan(
      await readFile(planPath, 'utf8'),
      `buildpack ${d.id}@${d.version}`,
      planPath,
    );
    return finish({ code, plan });
  } catch (err) {
    if (isPackfarmError(err)) return finish({ code: -1, error: err.message });
    throw err;
  }
}
