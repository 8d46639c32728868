import { type ErrorKind, PackfarmError } from '../util/errors.js';
import type { ErrorCode } from '../util/error-codes.js';

/**
 * Exit codes of the lifecycle phases (platform.md, per-phase "Exit Code" tables; the concrete values inside
 * each band are the ones the reference lifecycle uses, so platforms written against it keep working).
 */
export const EXIT = {
  OK: 0,
  /** Generic lifecycle failure (band 1–10, 13–19). */
  FAILED: 1,
  /** Unusable flags or arguments. */
  INVALID_ARGS: 3,
  INCOMPATIBLE_PLATFORM_API: 11,
  INCOMPATIBLE_BUILDPACK_API: 12,
  /** Every group failed detection and no buildpack errored. */
  DETECT_FAILED: 20,
  /** Every group failed detection and at least one buildpack errored (or lacked a matching target). */
  DETECT_FAILED_WITH_ERRORS: 21,
  /** Any other detect error (unreadable descriptor, I/O …). */
  DETECT_ERROR: 22,
  ANALYZE_ERROR: 32,
  RESTORE_ERROR: 42,
  /** A buildpack's bin/build exited non-zero. */
  BUILD_FAILED_WITH_ERRORS: 51,
  BUILD_ERROR: 52,
  EXPORT_ERROR: 62,
  REBASE_ERROR: 72,
  LAUNCH_ERROR: 82,
  GENERATE_FAILED_WITH_ERRORS: 91,
  GENERATE_ERROR: 92,
  EXTEND_ERROR: 102,
} as const;

export type ExitCode = (typeof EXIT)[keyof typeof EXIT];

/** The exit code of each kind of error raised below the phases (see `ErrorKind`). */
export const KIND_EXIT: Readonly<Record<ErrorKind, ExitCode>> = {
  'incompatible-buildpack-api': EXIT.INCOMPATIBLE_BUILDPACK_API,
  'buildpack-failed': EXIT.BUILD_FAILED_WITH_ERRORS,
  'invalid-order': EXIT.DETECT_ERROR,
};

/** The exit code an error stands for: a specific code it carries, else its kind's, else the generic 1. */
export function exitCodeOf(err: PackfarmError): number {
  if (err.exitCode !== EXIT.FAILED) return err.exitCode;
  return err.kind === undefined ? EXIT.FAILED : KIND_EXIT[err.kind];
}

/** The same error carrying `exitCode` (PackfarmError is immutable; the original stays the cause). */
export function withExitCodeSet(err: PackfarmError, exitCode: number): PackfarmError {
  return new PackfarmError(err.code, err.message, {
    exitCode,
    cause: err,
    ...(err.hint === undefined ? {} : { hint: err.hint }),
    ...(err.kind === undefined ? {} : { kind: err.kind }),
  });
}

/** The error code a phase gives an error that is not a PackfarmError (an I/O failure, say). */
const PHASE_ERROR_CODE: Readonly<Record<number, ErrorCode>> = {
  [EXIT.DETECT_ERROR]: 'DETECT_ERROR',
  [EXIT.ANALYZE_ERROR]: 'ANALYZE_ERROR',
  [EXIT.RESTORE_ERROR]: 'RESTORE_ERROR',
  [EXIT.BUILD_ERROR]: 'BUILD_ERROR',
  [EXIT.EXPORT_ERROR]: 'EXPORT_ERROR',
  [EXIT.REBASE_ERROR]: 'REBASE_ERROR',
};

/**
 * `err` as the failure of a phase whose exit code is `code`: an error keeping a specific exit code it carries
 * (3 for arguments, 11/12 for APIs, 20/21 for detection, 51 for a buildpack …) or its kind's; any other
 * PackfarmError takes `code`; anything else (ENOENT from a read, say) becomes a PackfarmError with `code`, so
 * every phase reports the same failure the same way.
 */
export function asPhaseError(err: unknown, code: number): PackfarmError {
  if (err instanceof PackfarmError) {
    if (err.exitCode !== EXIT.FAILED) return err;
    return withExitCodeSet(err, err.kind === undefined ? code : KIND_EXIT[err.kind]);
  }
  const message = err instanceof Error ? err.message : String(err);
  return new PackfarmError(PHASE_ERROR_CODE[code] ?? 'LIFECYCLE_ERROR', message, {
    exitCode: code,
    cause: err,
  });
}

/** Run (part of) a phase whose failures exit with `code` (see `asPhaseError`). */
export async function withExitCode<T>(code: number, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    throw asPhaseError(err, code);
  }
}

/**
 * Run a phase, giving errors from below it the exit code of their kind; other errors are left as they are
 * (a phase's input errors stay generic, exit 1, as in the reference lifecycle).
 */
export async function mapErrorKinds<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof PackfarmError && err.exitCode === EXIT.FAILED && err.kind !== undefined)
      throw withExitCodeSet(err, KIND_EXIT[err.kind]);
    throw err;
  }
}
