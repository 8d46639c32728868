import { execFile } from 'node:child_process';
import { availableParallelism, hostname, totalmem } from 'node:os';
import { promisify } from 'node:util';
import { type MachinePlatforms, detectPlatforms } from './binfmt.js';
import { DEFAULT_RUNTIME, findRuntime } from './runtime.js';

const execFileP = promisify(execFile);

/** What a build node offers: the platforms it can build, its OCI runtime and its CPUs. */
export interface NodeInfo {
  hostname: string;
  platforms: MachinePlatforms;
  runtime: {
    path: string;
    /** e.g. `1.1.5+ds1`; undefined when the runtime cannot be run (see `error`). */
    version?: string;
    /** The OCI runtime spec version it implements, e.g. `1.0.2-dev`. */
    spec?: string;
    error?: string;
  };
  /** Whether packfarm runs as root (the oci executor needs it; see spec/exec.md). */
  root: boolean;
  cpus: number;
  memoryBytes: number;
}

export async function nodeInfo(opts: { runtime?: string } = {}): Promise<NodeInfo> {
  const path = opts.runtime ?? (await findRuntime()) ?? DEFAULT_RUNTIME;
  const [platforms, runtime] = await Promise.all([detectPlatforms(), runtimeVersion(path)]);
  return {
    hostname: hostname(),
    platforms,
    runtime,
    root: process.getuid?.() === 0,
    cpus: availableParallelism(),
    memoryBytes: totalmem(),
  };
}

/** `runc --version`: `runc version 1.1.5+ds1` … `spec: 1.0.2-dev`. */
export async function runtimeVersion(path: string): Promise<NodeInfo['runtime']> {
  try {
    const { stdout } = await execFileP(path, ['--version'], { env: {} });
    const version = /version\s+(\S+)/.exec(stdout)?.[1];
    const spec = /^spec:\s*(\S+)/m.exec(stdout)?.[1];
    return { path, ...(version ? { version } : {}), ...(spec ? { spec } : {}) };
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    return { path, error: e.code === 'ENOENT' ? 'not installed (apt-get install runc)' : e.message };
  }
}
