import { mkdtemp, rm } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import pLimit from 'p-limit';
import { checkBuildpackApi } from '../buildpack/api.js';
import { checkPlatformApi, LATEST_PLATFORM_API } from '../platform/api.js';
import { apiAtLeast } from '../util/api-version.js';
import {
  type BuildpackDescriptor,
  type BuildpackStore,
  createBuildpackStore,
  type Order,
  type OrderElement,
  supportsExecEnv,
} from '../buildpack/descriptor.js';
import { type DetectOutcome, runDetect, verdictOf } from '../buildpack/detect.js';
import { type EnvFile, readEnvDir } from '../buildpack/env.js';
import { expandOrder } from '../buildpack/order.js';
import { mergeSystemBuildpacks, type PlatformOrder, readOrder } from '../platform/order.js';
import { type PlanCandidate, resolveBuildPlan } from '../buildpack/plan.js';
import { createHostExecutor } from '../exec/host.js';
import type { Executor } from '../exec/executor.js';
import { handOver } from '../exec/view.js';
import { asPhaseError, EXIT, mapErrorKinds } from '../platform/exit-codes.js';
import {
  type GroupEntry,
  type PlanFile,
  readAnalyzedFile,
  readSystemFile,
  runImageTargetOf,
  type SystemFile,
  writeGroupFile,
  writePlanFile,
} from '../platform/files.js';
import {
  anyTargetMatches,
  completeTarget,
  formatTarget,
  type RunImageTarget,
  targetEnv,
} from '../platform/target.js';
import { isPackfarmError, PackfarmError } from '../util/errors.js';
import { type LogLevel, type Logger, silentLogger } from '../util/log.js';

/**
 * The detect phase (platform.md "detector", buildpack.md "Phase #1: Detection"): try the order's groups in
 * sequence, run the bin/detect of each group's buildpacks (concurrently, each buildpack at most once per run),
 * and select the first group whose required buildpacks pass and whose build plan resolves.
 */

export interface DetectOptions {
  appDir: string;
  platformDir: string;
  /** Where buildpacks live (`<buildpacks>/<escaped id>/<version>/`); or pass `store`. */
  buildpacksDir?: string;
  store?: BuildpackStore;
  /** The order to try: given directly, or read from `orderPath`. */
  order?: Order | PlatformOrder;
  orderPath?: string;
  /** Write the selected group / resolved plan here (atomic). */
  groupPath?: string;
  planPath?: string;
  /** The build's target. Without it: analyzed.toml `[run-image.target]`, completed from the build env. */
  target?: RunImageTarget;
  analyzedPath?: string;
  /** `<build-config>` (operator env in `env/`). */
  buildConfigDir?: string;
  /** Platform API 0.15 system buildpacks: a parsed system.toml or its path (missing file = none). */
  system?: SystemFile;
  systemPath?: string;
  /** `CNB_EXEC_ENV`, default `production`. */
  execEnv?: string;
  /** Platform API of the run (default: newest supported). */
  platformApi?: string;
  executor?: Executor;
  /**
   * The lifecycle's environment; buildpacks see only its allowlisted variables. Default: process.env. An
   * executor with an environment of its own (the oci executor: the build image's Env) replaces it.
   */
  hostEnv?: Readonly<Record<string, string | undefined>>;
  /** Parallel bin/detect processes (default: CPU count). */
  concurrency?: number;
  /** os-release of the build environment, for distro data the target lacks. */
  osReleasePath?: string;
  /**
   * Where per-buildpack plan files go (default: a temp dir in the executor's scratch space, or in the OS temp
   * dir for the host executor, removed afterwards).
   */
  scratchDir?: string;
  logger?: Logger;
  onEvent?: (event: DetectEvent) => void;
  signal?: AbortSignal;
}

export type DetectEvent =
  | { type: 'group-start'; index: number; buildpacks: string[] }
  | {
      type: 'buildpack';
      id: string;
      version: string;
      verdict: 'pass' | 'fail' | 'error';
      code: number;
      durationMs: number;
    }
  | { type: 'buildpack-skipped'; id: string; version: string; reason: 'target' | 'exec-env' | 'duplicate' }
  | { type: 'group-end'; index: number; passed: boolean };

export interface DetectResult {
  /** The selected group, as written to group.toml. */
  group: GroupEntry[];
  plan: PlanFile;
  /** The target buildpacks were matched against and told about (`CNB_TARGET_*`). */
  target: RunImageTarget;
  /** Candidate groups tried (after composite expansion), including the selected one. */
  groupsTried: number;
}

interface Member {
  element: OrderElement;
  descriptor: BuildpackDescriptor;
  key: string;
}

interface LogEntry {
  level: LogLevel;
  msg: string;
}

const keyOf = (id: string, version: string) => `${id}@${version}`;

/** Run detection. Throws PackfarmError with the lifecycle exit code (20, 21, 22, 11, 12 …) on failure. */
export function detect(opts: DetectOptions): Promise<DetectResult> {
  return mapErrorKinds(() => runDetection(opts));
}

async function runDetection(opts: DetectOptions): Promise<DetectResult> {
  const platformApi = checkPlatformApi(opts.platformApi ?? LATEST_PLATFORM_API);
  const logger = opts.logger ?? silentLogger;
  const executor = opts.executor ?? createHostExecutor();
  const store = opts.store ?? createBuildpackStore(requireOpt(opts.buildpacksDir, 'buildpacksDir'));
  const execEnv = opts.execEnv ?? 'production';
  const appDir = resolve(opts.appDir);
  const platformDir = resolve(opts.platformDir);

  // --- inputs (failures here are generic lifecycle errors, as in the reference "initialize detector")
  const platformOrder = await loadOrder(opts);
  if (platformOrder.orderExtensions.some((g) => g.group.length > 0))
    throw new PackfarmError(
      'EXTENSIONS_UNSUPPORTED',
      `${opts.orderPath ?? 'order'}: [[order-extensions]] lists image extensions, which packfarm does not support yet`,
      { hint: 'remove the image extensions from the builder order', exitCode: EXIT.FAILED },
    );
  let order = platformOrder.order;
  if (apiAtLeast(platformApi, '0.15')) {
    const system = opts.system ?? (opts.systemPath ? await readSystemFile(opts.systemPath) : undefined);
    if (system) order = mergeSystemBuildpacks(order, system);
  }
  // Read every buildpack the order names (in parallel), then report the first problem in order.
  const named = [
    ...new Map(order.flatMap((g) => g.group).map((el) => [keyOf(el.id, el.version), el])).values(),
  ];
  const looked = await Promise.allSettled(named.map((el) => store.lookup(el.id, el.version)));
  looked.forEach((r, i) => {
    if (r.status === 'rejected') throw r.reason;
    const el = named[i]!;
    checkBuildpackApi(r.value.api, `buildpack ${keyOf(el.id, el.version)} (${r.value.path})`);
  });

  let baseTarget = opts.target;
  if (!baseTarget && opts.analyzedPath)
    baseTarget = runImageTargetOf(await readAnalyzedFile(opts.analyzedPath, { missingOk: true }));
  const target = await completeTarget(
    baseTarget,
    opts.osReleasePath ? { osReleasePath: opts.osReleasePath } : {},
  );
  const tEnv = targetEnv(target);
  const userEnv = await readEnvDir(join(platformDir, 'env'));
  const buildConfigEnv: EnvFile[] = opts.buildConfigDir
    ? await readEnvDir(join(opts.buildConfigDir, 'env'))
    : [];

  const ownScratch = opts.scratchDir === undefined;
  const scratchDir =
    opts.scratchDir ?? (await mkdtemp(join(executor.hostPaths?.scratch ?? tmpdir(), 'packfarm-detect-')));
  if (ownScratch) await handOver(executor, scratchDir);
  const hostEnv = executor.baseEnv ?? opts.hostEnv ?? process.env;
  const limit = pLimit(Math.max(1, opts.concurrency ?? availableParallelism()));
  const runs = new Map<string, Promise<DetectOutcome>>();
  const errors = new Map<string, DetectOutcome>();
  const entries: LogEntry[] = [];
  const log = (level: LogLevel, msg: string) => entries.push({ level, msg });

  const lookup = async (id: string, version: string) => {
    let d: BuildpackDescriptor;
    try {
      d = await store.lookup(id, version);
    } catch (err) {
      throw asPhaseError(err, EXIT.DETECT_ERROR);
    }
    checkBuildpackApi(d.api, `buildpack ${keyOf(id, version)} (${d.path})`);
    return d;
  };
  const detectOnce = (m: Member): Promise<DetectOutcome> => {
    let p = runs.get(m.key);
    if (!p) {
      p = limit(() =>
        runDetect({
          executor,
          descriptor: m.descriptor,
          appDir,
          platformDir,
          scratchDir,
          hostEnv,
          userEnv,
          buildConfigEnv,
          targetEnv: tEnv,
          execEnv,
          ...(opts.signal ? { signal: opts.signal } : {}),
        }),
      ).then((o) => {
        opts.onEvent?.({
          type: 'buildpack',
          id: m.element.id,
          version: m.element.version,
          verdict: verdictOf(o),
          code: o.code,
          durationMs: o.durationMs,
        });
        return o;
      });
      runs.set(m.key, p);
    }
    return p;
  };

  let anyBuildpackError = false;
  let index = 0;
  let failure: unknown;
  try {
    for await (const candidate of expandOrder(order, lookup)) {
      if (opts.signal?.aborted)
        throw new PackfarmError('ABORTED', 'detection was aborted', { exitCode: EXIT.DETECT_ERROR });
      index++;
      opts.onEvent?.({
        type: 'group-start',
        index,
        buildpacks: candidate.map((e) => keyOf(e.id, e.version)),
      });
      const outcome = await detectGroup(candidate);
      opts.onEvent?.({ type: 'group-end', index, passed: outcome !== undefined });
      if (outcome) {
        const result: DetectResult = { ...outcome, target, groupsTried: index };
        if (opts.groupPath) await writeGroupFile(opts.groupPath, { group: result.group });
        if (opts.planPath) await writePlanFile(opts.planPath, result.plan);
        flush(logger, entries, false);
        return result;
      }
    }
    const message = index === 0 ? 'the order has no groups' : 'no buildpack group passed detection';
    failure = anyBuildpackError
      ? new PackfarmError(
          'DETECT_FAILED_WITH_ERRORS',
          `${message} (a buildpack errored; see the output above)`,
          {
            exitCode: EXIT.DETECT_FAILED_WITH_ERRORS,
          },
        )
      : new PackfarmError('DETECT_FAILED', message, {
          exitCode: EXIT.DETECT_FAILED,
          hint: 'check that the app directory is the one you meant and that the builder has buildpacks for this app',
        });
  } catch (err) {
    failure = isPackfarmError(err) ? err : asPhaseError(err, EXIT.DETECT_ERROR);
  } finally {
    if (ownScratch) await rm(scratchDir, { recursive: true, force: true });
  }
  flush(logger, entries, true);
  throw failure;

  async function detectGroup(
    candidate: OrderElement[],
  ): Promise<Omit<DetectResult, 'target' | 'groupsTried'> | undefined> {
    const done: Member[] = [];
    for (const el of candidate) {
      if (done.some((m) => m.element.id === el.id)) {
        opts.onEvent?.({ type: 'buildpack-skipped', id: el.id, version: el.version, reason: 'duplicate' });
        continue;
      }
      const descriptor = await lookup(el.id, el.version);
      const member: Member = { element: el, descriptor, key: keyOf(el.id, el.version) };
      if (!anyTargetMatches(target, descriptor.targets)) {
        if (el.optional) {
          log('debug', `skip: ${member.key} has no target matching ${formatTarget(target)}`);
          opts.onEvent?.({ type: 'buildpack-skipped', id: el.id, version: el.version, reason: 'target' });
          continue;
        }
        errors.set(member.key, {
          code: -1,
          output: '',
          error: `unable to satisfy target constraints: the build targets ${formatTarget(target)}, buildpack ${member.key} supports ${descriptor.targets.map(formatTarget).join(', ')}`,
          durationMs: 0,
        });
        done.push(member);
        continue;
      }
      if (apiAtLeast(platformApi, '0.15') && execEnv && !runsInExecEnv(el, descriptor, execEnv)) {
        log('debug', `skip: ${member.key} does not support execution environment ${execEnv}`);
        opts.onEvent?.({ type: 'buildpack-skipped', id: el.id, version: el.version, reason: 'exec-env' });
        continue;
      }
      done.push(member);
    }

    const outcomes = await Promise.all(done.map((m) => errors.get(m.key) ?? detectOnce(m)));

    let passedAll = true;
    let anyPassed = false;
    let groupError = false;
    const candidates: PlanCandidate<Member>[] = [];
    done.forEach((m, i) => {
      const o = outcomes[i]!;
      const verdict = verdictOf(o);
      const level: LogLevel = verdict === 'error' ? 'info' : 'debug';
      if (o.output.length) {
        log(level, `======== Output: ${m.key} ========`);
        log(level, o.output.replace(/\n$/, ''));
      }
      if (o.error) {
        log(level, `======== Error: ${m.key} ========`);
        log(level, o.error);
      }
    });
    log('debug', '======== Results ========');
    done.forEach((m, i) => {
      const o = outcomes[i]!;
      const verdict = verdictOf(o);
      if (verdict === 'pass') {
        log('debug', `pass: ${m.key}`);
        anyPassed = true;
        candidates.push({
          member: m,
          optional: m.element.optional,
          id: m.element.id,
          version: m.element.version,
          plan: o.plan ?? { main: { provides: [], requires: [] }, or: [] },
        });
        return;
      }
      if (verdict === 'fail') log('debug', `${m.element.optional ? 'skip' : 'fail'}: ${m.key}`);
      else {
        log('info', o.code === -1 ? `err:  ${m.key}` : `err:  ${m.key} (${o.code})`);
        groupError = true;
      }
      if (!m.element.optional) passedAll = false;
    });
    if (!passedAll || !anyPassed) {
      if (passedAll) log('debug', 'fail: no viable buildpacks in group');
      if (!passedAll && groupError) anyBuildpackError = true;
      return undefined;
    }

    const resolved = resolveBuildPlan(candidates, (msg) => log('debug', msg));
    if (!resolved) return undefined;
    if (resolved.members.length !== done.length)
      log('info', `${resolved.members.length} of ${done.length} buildpacks participating`);
    const width = Math.max(...resolved.members.map((m) => m.element.id.length));
    for (const m of resolved.members) log('info', `${m.element.id.padEnd(width)} ${m.element.version}`);
    return {
      group: resolved.members.map((m) => ({
        id: m.element.id,
        version: m.element.version,
        api: m.descriptor.api,
        ...(m.descriptor.homepage ? { homepage: m.descriptor.homepage } : {}),
      })),
      plan: { entries: resolved.entries },
    };
  }
}

function runsInExecEnv(el: OrderElement, d: BuildpackDescriptor, execEnv: string): boolean {
  if (!supportsExecEnv(d, execEnv)) return false;
  // An order entry may restrict itself further (order-group `exec-env`, Buildpack API 0.12).
  if (el.execEnv?.length && !el.execEnv.includes('*') && !el.execEnv.includes(execEnv)) return false;
  return true;
}

async function loadOrder(opts: DetectOptions): Promise<PlatformOrder> {
  if (opts.order) return Array.isArray(opts.order) ? { order: opts.order, orderExtensions: [] } : opts.order;
  return readOrder(requireOpt(opts.orderPath, 'order or orderPath'));
}

function requireOpt<T>(v: T | undefined, name: string): T {
  if (v === undefined) throw new Error(`detect: ${name} is required`);
  return v;
}

/**
 * Hand the buffered detect log to the logger. As in the reference lifecycle, buildpack output and the
 * per-buildpack results are debug-level on success but shown in full when detection fails.
 */
function flush(logger: Logger, entries: readonly LogEntry[], failed: boolean): void {
  for (const e of entries) {
    const level = failed && e.level === 'debug' ? 'info' : e.level;
    logger[level](e.msg);
  }
}
