import type { Executor } from '../exec/executor.js';
import { publishIndex } from '../image/publish-index.js';
import { formatImageLocation } from '../image/transport.js';
import type { Digest } from '../oci/digest.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import type { BuildEvent, BuildEventListener, BuildPhase } from './events.js';
import { type BuildOptions, type BuildPlan, type PlanHooks, type TargetPlan, planBuild } from './plan.js';
import { type RunTargetHooks, type TargetReport, runTarget } from './run-target.js';

/**
 * `packfarm build` as a function: plan once (planBuild), run every target (runTarget), at most `jobs` at a
 * time, then publish. One target gives one plain image under the tags, byte for byte what a one-platform
 * build always gave. Several targets give one image per target written by digest, then one index (children
 * sorted by platform) put under the tags last, and only when every target succeeded. The first target to
 * fail cancels the others; the error names the target, the phase and the cause, and no tag is written.
 */
export type { BuildOptions } from './plan.js';
export type { TargetReport } from './run-target.js';
export type { BuildEvent } from './events.js';

export interface BuildHooks extends PlanHooks {
  onEvent?: BuildEventListener;
  signal?: AbortSignal;
  /** Creates each target's executor (default: host processes). */
  executor?: (target: TargetPlan) => Executor | Promise<Executor>;
  /**
   * Runs one target instead of runTarget in this process: a farm places it on a node (src/farm/runner.ts).
   * It must leave the image in the plan's outputs as runTarget would (by digest with an index, tagged without).
   */
  runTarget?: (plan: BuildPlan, target: TargetPlan, hooks: RunTargetHooks) => Promise<TargetReport>;
}

/** What `packfarm build --json` prints. */
export interface BuildReport {
  image: string;
  /** Where the image went, as a location (`docker://…` or `oci:DIR:TAG`). */
  location: string;
  /** The index's digest (several targets), else the image's. */
  digest: Digest;
  mediaType: string;
  manifestSize: number;
  /** Whether `digest` is an index (several targets) rather than one image. */
  index: boolean;
  tags: string[];
  targets: TargetReport[];
  /** Blob bytes sent to registry outputs by all targets (the sum of their `bytesUploaded`). */
  bytesUploaded: number;
  /** What planning decided that the user should know (targets left out, host-only builds). */
  notes: string[];
  warnings: string[];
  /** Seconds: planning, the targets (wall time, in parallel), publishing the index, the whole build. */
  timings: { plan: number; targets: number; publish: number; total: number };
}

export async function build(input: BuildOptions, hooks: BuildHooks = {}): Promise<BuildReport> {
  const t0 = performance.now();
  const emit = (e: BuildEvent) => hooks.onEvent?.(e);
  emit({ type: 'phase-start', target: '', phase: 'plan' });
  const plan = await planBuild(input, hooks);
  const tPlan = performance.now();
  emit({ type: 'phase-end', target: '', phase: 'plan', seconds: sec(tPlan - t0) });
  emit({
    type: 'planned',
    target: '',
    phase: 'plan',
    targets: plan.targets.map((t) => ({ name: t.name, runs: t.runs, executor: t.executor })),
    index: plan.index,
  });
  for (const note of plan.notes) emit({ type: 'info', target: '', phase: 'plan', message: note });
  try {
    const targets = await runTargets(plan, hooks);
    const tTargets = performance.now();
    const opts = plan.options;
    const location = formatImageLocation(plan.outputLocation);
    const warnings = targets.flatMap((t) => t.warnings.map((w) => (plan.index ? `${t.platform}: ${w}` : w)));
    if (!plan.index) {
      const only = targets[0]!;
      return {
        image: opts.image,
        location,
        digest: only.digest,
        mediaType: only.mediaType,
        manifestSize: only.manifestSize,
        index: false,
        tags: only.tags,
        targets,
        bytesUploaded: only.bytesUploaded,
        notes: plan.notes,
        warnings,
        timings: {
          plan: sec(tPlan - t0),
          targets: sec(tTargets - tPlan),
          publish: 0,
          total: sec(tTargets - t0),
        },
      };
    }
    emit({ type: 'phase-start', target: '', phase: 'publish' });
    const tags: string[] = [];
    let published: Awaited<ReturnType<typeof publishIndex>> | undefined;
    for (const out of plan.outputs) {
      const p = await publishIndex({
        store: out.store,
        images: targets.map((t) => t.digest),
        tags: out.tags,
        format: opts.format,
      });
      published ??= p;
      for (const w of p.warnings) warnings.push(w);
      for (const [i, tag] of out.tags.entries())
        tags.push(out.names?.[i] ?? `${out.store.description}:${tag}`);
      emit({
        type: 'index',
        target: '',
        phase: 'publish',
        digest: p.digest,
        mediaType: p.mediaType,
        tags: out.tags,
        written: p.written,
      });
    }
    const tEnd = performance.now();
    emit({ type: 'phase-end', target: '', phase: 'publish', seconds: sec(tEnd - tTargets) });
    return {
      image: opts.image,
      location,
      digest: published!.digest,
      mediaType: published!.mediaType,
      manifestSize: published!.size,
      index: true,
      tags,
      targets: sortByPlatform(targets),
      bytesUploaded: targets.reduce((a, t) => a + t.bytesUploaded, 0),
      notes: plan.notes,
      warnings,
      timings: {
        plan: sec(tPlan - t0),
        targets: sec(tTargets - tPlan),
        publish: sec(tEnd - tTargets),
        total: sec(tEnd - t0),
      },
    };
  } finally {
    await plan.cleanup();
  }
}

/** The one-platform name of build(), kept for API users. */
export const buildApp = build;
export type BuildAppOptions = BuildOptions;
export type BuildAppHooks = BuildHooks;

/**
 * Every target, at most `plan.jobs` at a time. The first failure aborts the rest (their processes are
 * terminated through the signal) and is what the caller sees.
 */
async function runTargets(plan: BuildPlan, hooks: BuildHooks): Promise<TargetReport[]> {
  const ac = new AbortController();
  const onOuterAbort = () => ac.abort(hooks.signal?.reason);
  hooks.signal?.addEventListener('abort', onOuterAbort, { once: true });
  const results: TargetReport[] = [];
  let failure: { target: TargetPlan; phase: BuildPhase; error: unknown } | undefined;
  let next = 0;
  const worker = async () => {
    while (next < plan.targets.length && !ac.signal.aborted) {
      const target = plan.targets[next++]!;
      let phase: BuildPhase = 'analyze';
      try {
        const run = hooks.runTarget ?? runTarget;
        results.push(
          await run(plan, target, {
            onEvent: (e) => {
              if (e.type === 'phase-start') phase = e.phase;
              hooks.onEvent?.(e);
            },
            signal: ac.signal,
            ...(hooks.executor ? { executor: hooks.executor } : {}),
          }),
        );
      } catch (error) {
        if (!failure) {
          failure = { target, phase, error };
          ac.abort(error);
        }
        hooks.onEvent?.({
          type: 'target-failed',
          target: target.name,
          phase,
          message: (error as Error)?.message ?? String(error),
        });
      }
    }
  };
  try {
    await Promise.all(Array.from({ length: Math.min(plan.jobs, plan.targets.length) }, worker));
  } finally {
    hooks.signal?.removeEventListener('abort', onOuterAbort);
  }
  // Cancelled from outside: the targets' failures are consequences, not causes.
  if (hooks.signal?.aborted)
    throw new PackfarmError('ABORTED', 'the build was cancelled; no tag was written', { exitCode: 130 });
  if (failure) throw targetError(plan, failure);
  return results;
}

function targetError(plan: BuildPlan, f: { target: TargetPlan; phase: BuildPhase; error: unknown }): unknown {
  // One target: the error as a one-platform build always reported it.
  if (!plan.index) return f.error;
  const cause = f.error as Error;
  const message = `target ${f.target.name} failed in ${f.phase}: ${cause?.message ?? String(f.error)}; no tag was written`;
  if (isPackfarmError(f.error))
    return new PackfarmError(f.error.code, message, {
      cause: f.error,
      exitCode: f.error.exitCode,
      ...(f.error.hint ? { hint: f.error.hint } : {}),
    });
  return new PackfarmError('TARGET_FAILED', message, { cause: f.error });
}

function sortByPlatform(targets: TargetReport[]): TargetReport[] {
  return [...targets].sort((a, b) => (a.platform < b.platform ? -1 : a.platform > b.platform ? 1 : 0));
}

function sec(ms: number): number {
  return Math.round(ms) / 1000;
}
