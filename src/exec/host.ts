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
  });
  const supervised = superviseChild(child, spec, { killGraceMs, kill: (signal) => child.kill(signal) });

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
