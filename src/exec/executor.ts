/**
 * How buildpack processes (bin/detect, bin/build, exec.d) are started. The lifecycle never spawns them
 * itself; it hands an `ExecSpec` to an `Executor`.
 *
 * Paths in a spec (argv[0], cwd, values in env) are in the BUILD ENVIRONMENT's view of the filesystem. For the
 * host executor that is the host's view. The OCI-runtime executor (oci.ts) runs the process inside the build
 * image's root filesystem with the app, layers, platform, buildpacks and scratch dirs mounted; it reports both
 * sides of that mapping (`hostPaths` → `paths`), and phases build specs from host paths and translate them with
 * `toExecutorView` (view.ts) right before `run`.
 */
export interface ExecDirs {
  /** The app dir (`/workspace` inside a container). */
  app: string;
  /** The layers dir (`/layers`). */
  layers: string;
  /** The platform dir (`/platform`, read-only). */
  platform: string;
  /** The buildpacks dir, `<id>/<version>/` below it (`/cnb/buildpacks`, read-only). */
  buildpacks: string;
  /** Scratch space the lifecycle shares with buildpacks: plan files (`/cnb/scratch`). */
  scratch: string;
}

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
  /** The mounted dirs as processes see them; undefined = processes see the host's paths. */
  readonly paths?: ExecDirs;
  /** The same dirs on the host (what the lifecycle reads and writes); set together with `paths`. */
  readonly hostPaths?: ExecDirs;
  /**
   * The user processes run as, when the lifecycle must hand files to it (the build image's CNB user); see
   * `handOver` in view.ts. Undefined = the lifecycle's own user.
   */
  readonly user?: { uid: number; gid: number };
  /**
   * The environment the build environment provides (the build image's config Env); phases start buildpack
   * env from it instead of the lifecycle's own environment. Undefined = the lifecycle's environment.
   */
  readonly baseEnv?: Readonly<Record<string, string>>;
  /** Release what the executor holds (containers, bundles, scratch space). Safe to call twice. */
  close?(): Promise<void>;
}
