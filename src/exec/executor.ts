/**
 * How buildpack processes (bin/detect, bin/build, exec.d) are started. The lifecycle never spawns them
 * itself; it hands an `ExecSpec` to an `Executor`.
 *
 * Paths in a spec (argv[0], cwd, values in env) are in the BUILD ENVIRONMENT's view of the filesystem. For the
 * host executor that is the host's view. An OCI-runtime executor (later) runs the process inside the builder
 * image's root filesystem with the app, layers, platform and buildpacks dirs mounted; it owns the mapping
 * between the lifecycle's paths and the container's (its `pathMap`), so callers must build specs from the
 * paths the executor reports for those dirs, not from arbitrary host paths.
 */
export interface ExecSpec {
  /** argv[0] is the executable (absolute path); no shell is involved. */
  argv: string[];
  cwd: string;
  /**
   * Exactly the environment the process gets: nothing is inherited from the lifecycle's own environment.
   * Callers start from `pickHostEnv` (exec/env.ts) and add the spec's variables.
   */
  env: Record<string, string>;
  /** Data written to the process' stdin, which is then closed. Without it stdin is empty (/dev/null). */
  stdin?: string | Uint8Array;
  /** Live output chunks, for streaming logs. */
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  /** Also collect stdout and stderr into the result (UTF-8). */
  capture?: boolean;
  /** Aborting terminates the process (SIGTERM, then SIGKILL after a grace period). */
  signal?: AbortSignal;
  /** Terminate the process after this long (same escalation as abort). */
  timeoutMs?: number;
}

export interface ExecResult {
  /** The exit status; for a process killed by a signal, 128 + the signal number (as shells report it). */
  exitCode: number;
  /** Set when a signal ended the process, e.g. `SIGKILL`. */
  signal?: string;
  timedOut?: boolean;
  aborted?: boolean;
  stdout?: string;
  stderr?: string;
}

export interface Executor {
  /** `host`, `oci` … for logs and reports. */
  readonly kind: string;
  /**
   * Run one process to completion. Resolves with the exit status whatever it is; rejects (PackfarmError) only
   * when the process could not be started at all — e.g. the executable is missing or not executable.
   */
  run(spec: ExecSpec): Promise<ExecResult>;
}
