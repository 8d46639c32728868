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

/** Exit codes of a buildpack's bin/detect (buildpack.md "Detection"): anything else is an error. */
export const DETECT_PASS = 0;
export const DETECT_FAIL = 100;
