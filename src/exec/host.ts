import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { PackfarmError } from '../util/errors.js';
import type { ExecResult, ExecSpec, Executor } from './executor.js';
import { abortedBeforeStart, signalNumber, superviseChild } from './supervise.js';

export interface HostExecutorOptions {
  /** How long a terminated process gets between SIGTERM and SIGKILL. Default 5 s. */
  killGraceMs?: number;
}

/**
 * Run processes as children of this Node process: native architecture, no isolation. Meant for tests and for
 * running inside an already isolated build container.
 *
 * Built on `node:child_process` directly rather than execa: detect runs many tiny processes and execa's
 * per-spawn bookkeeping measured ~3–4 ms extra per process here (see bench/detect.mjs), which dominated the
 * lifecycle's own overhead for an order where nothing passes.
 */
export function createHostExecutor(opts: HostExecutorOptions = {}): Executor {
  const killGraceMs = opts.killGraceMs ?? 5000;
  return {
    kind: 'host',
    run: (spec) => runOnHost(spec, killGraceMs),
  };
}

/**
 * Each buildpack process leads its own process group, so that what it starts (a compiler, a background
 * server, `sleep`) can be stopped with it: on abort or timeout the whole group is terminated, once the
 * process itself has exited its leftovers are killed (a build container would end them the same way), and
 * groups still running when packfarm exits (a signal, an uncaught error) are killed on the way out instead of
 * staying behind as orphans that write into a build dir the next build reuses.
 */
const liveGroups = new Set<number>();
let exitHookInstalled = false;

function killGroup(pgid: number, signal: NodeJS.Signals): void {
  try {
    process.kill(-pgid, signal);
  } catch {
    // ESRCH: the group is gone already.
  }
}

function trackGroup(pgid: number): void {
  if (!exitHookInstalled) {
    exitHookInstalled = true;
    process.on('exit', () => {
      for (const g of liveGroups) killGroup(g, 'SIGKILL');
    });
  }
  liveGroups.add(pgid);
}

async function runOnHost(spec: ExecSpec, killGraceMs: number): Promise<ExecResult> {
  const [file, ...args] = spec.argv;
  if (!file) throw new Error('ExecSpec.argv must not be empty');
  const early = abortedBeforeStart(spec);
  if (early) return early;

  const child = spawn(file, args, {
    cwd: spec.cwd,
    env: spec.env,
    stdio: [spec.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
    shell: false,
    windowsHide: true,
    // A new process group (and session), led by the child: see liveGroups.
    detached: true,
  });
  const pgid = child.pid;
  if (pgid !== undefined) trackGroup(pgid);
  child.once('exit', () => {
    if (pgid === undefined) return;
    // Leftovers of a finished process (which may hold its stdout open, so 'close' would never come).
    killGroup(pgid, 'SIGKILL');
    liveGroups.delete(pgid);
  });

  // Signals go to the whole process group, so what the buildpack started ends with it.
  const supervised = superviseChild(child, spec, {
    killGraceMs,
    kill: (signal) => {
      if (pgid !== undefined) killGroup(pgid, signal);
    },
  });

  try {
    const { code, signal } = await supervised.exited;
    const result: ExecResult = {
      exitCode: code ?? (signal ? 128 + signalNumber(signal) : 1),
    };
    if (signal) result.signal = signal;
    return supervised.finish(result);
  } catch (e) {
    throw await spawnError(e as NodeJS.ErrnoException, file, spec.cwd);
  } finally {
    supervised.dispose();
  }
}

/** Turn a spawn failure into a message that names the file and the likely cause. */
async function spawnError(e: NodeJS.ErrnoException, file: string, cwd: string): Promise<PackfarmError> {
  const code = e.code ?? 'UNKNOWN';
  let message: string;
  let hint: string | undefined;
  if (code === 'ENOENT') {
    const cwdOk = await stat(cwd).then(
      (s) => s.isDirectory(),
      () => false,
    );
    const fileOk = await stat(file).then(
      () => true,
      () => false,
    );
    if (!cwdOk) message = `cannot run ${file}: working directory ${cwd} does not exist`;
    else if (!fileOk) message = `cannot run ${file}: no such file`;
    else {
      message = `cannot run ${file}: its interpreter (#! line) was not found`;
      hint = 'check the first line of the script and the PATH given to it';
    }
  } else if (code === 'EACCES') {
    message = `cannot run ${file}: permission denied (is it executable?)`;
    hint = `chmod +x ${file}`;
  } else if (code === 'ENOEXEC') {
    message = `cannot run ${file}: not an executable format (a script needs a #! line)`;
  } else {
    message = `cannot run ${file}: ${e.message}`;
  }
  return new PackfarmError('EXEC_FAILED', message, { cause: e, ...(hint ? { hint } : {}) });
}
