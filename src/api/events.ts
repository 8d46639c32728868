import type { Digest } from '../oci/digest.js';
import type { CreatePhase } from '../phase/create.js';
import type { LayerOutcome } from '../phase/export.js';
import type { Logger } from '../util/log.js';

/**
 * What a build tells its caller while it runs: one discriminated union, every event carrying the target it is
 * about (`linux/arm64`; `''` for the build as a whole: planning, the index) and the phase it happened in.
 * The API hands them to `onEvent`; only the CLI turns them into text (status lines, prefixed lines, JSON
 * lines). Phases never print.
 */
/** `prepare`: a target's build dirs, workspace and executor (build image root filesystem) before analyze. */
export type BuildPhase = 'plan' | 'prepare' | CreatePhase | 'publish';

interface EventBase {
  /** `os/arch[/variant]` of the target, or '' for the whole build. */
  target: string;
  phase: BuildPhase;
}

export type BuildEvent = EventBase &
  /** Planning is done: the targets, and whether an index will be published. */
  (
    | {
        type: 'planned';
        targets: Array<{ name: string; runs: 'native' | 'emulated'; executor: string }>;
        index: boolean;
      }
    | { type: 'target-start'; runs: 'native' | 'emulated'; executor: string }
    | { type: 'target-end'; digest: Digest; seconds: number }
    | { type: 'target-failed'; message: string }
    | { type: 'phase-start' }
    | { type: 'phase-end'; seconds: number }
    /** A line a buildpack printed. */
    | { type: 'output'; buildpack: string; stream: 'stdout' | 'stderr'; line: string }
    /** The lifecycle's own information (what it reused, skipped, restored). */
    | { type: 'info'; message: string }
    | { type: 'debug'; message: string }
    | { type: 'warning'; message: string }
    /** Detect's verdict per buildpack. */
    | { type: 'detected'; buildpack: string; verdict: 'pass' | 'fail' | 'error' | 'skipped' }
    | { type: 'layer'; name: string; outcome: LayerOutcome; digest: Digest; size: number }
    /** Bytes sent to a registry so far by this target (blob uploads). */
    | { type: 'upload'; bytes: number }
    | { type: 'index'; digest: Digest; mediaType: string; tags: string[]; written: string[] }
  );

export type BuildEventListener = (e: BuildEvent) => void;

/** A logger whose lines become events of the target, in the phase running at the time. */
export function eventLogger(target: string, phase: () => BuildPhase, emit: (e: BuildEvent) => void): Logger {
  const logger: Logger = {
    debug: (message) => emit({ type: 'debug', target, phase: phase(), message }),
    info: (message) => emit({ type: 'info', target, phase: phase(), message }),
    warn: (message) => emit({ type: 'warning', target, phase: phase(), message }),
    error: (message) => emit({ type: 'warning', target, phase: phase(), message }),
    child: () => logger,
  };
  return logger;
}
