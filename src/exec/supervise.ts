import type { ChildProcess } from 'node:child_process';
import { constants as osConstants } from 'node:os';
import type { ExecResult, ExecSpec } from './executor.js';

/**
 * What every executor does around the child process it starts (the buildpack itself on the host, or the OCI
 * runtime that runs it in a container): pass output on and capture it, feed stdin, end the process on
 * timeout or abort (SIGTERM, then SIGKILL after a grace period), and report how it ended. How a signal
 * reaches the process is the executor's own (`kill`).
 */
export interface SupervisedChild {
  /** Settles when the child has exited and its output is drained; rejects when it could not be spawned. */
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  /** `result` with what the supervision saw added: timedOut, aborted, captured stdout/stderr. */
  finish(result: ExecResult): ExecResult;
  /** Stop the timers and the abort listener (call once the child is done, whatever happened). */
  dispose(): void;
}

/** The result of a run whose signal was aborted before anything started. */
export function abortedBeforeStart(spec: Pick<ExecSpec, 'signal'>): ExecResult | undefined {
  if (!spec.signal?.aborted) return undefined;
  return { exitCode: 128 + signalNumber('SIGTERM'), signal: 'SIGTERM', aborted: true };
}

export function superviseChild(
  child: ChildProcess,
  spec: ExecSpec,
  opts: { killGraceMs: number; kill(signal: 'SIGTERM' | 'SIGKILL'): void },
): SupervisedChild {
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout?.on('data', (chunk: Buffer) => {
    spec.onStdout?.(chunk);
    if (spec.capture) out.push(chunk);
  });
  child.stderr?.on('data', (chunk: Buffer) => {
    spec.onStderr?.(chunk);
    if (spec.capture) err.push(chunk);
  });
  if (spec.stdin !== undefined && child.stdin) {
    // A process that exits without reading its stdin makes the write fail with EPIPE; that is its business.
    child.stdin.on('error', () => {});
    child.stdin.end(spec.stdin);
  }
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (code, signal) => resolve({ code, signal }));
  });

  let timedOut = false;
  let aborted = false;
  let terminating = false;
  let killTimer: NodeJS.Timeout | undefined;
  const terminate = () => {
    if (terminating || child.exitCode !== null || child.signalCode !== null) return;
    terminating = true;
    opts.kill('SIGTERM');
    killTimer = setTimeout(() => opts.kill('SIGKILL'), opts.killGraceMs);
    killTimer.unref();
  };
  const timeout =
    spec.timeoutMs === undefined
      ? undefined
      : setTimeout(() => {
          timedOut = true;
          terminate();
        }, spec.timeoutMs);
  const onAbort = () => {
    aborted = true;
    terminate();
  };
  spec.signal?.addEventListener('abort', onAbort, { once: true });

  return {
    exited,
    finish(result) {
      if (timedOut) result.timedOut = true;
      if (aborted) result.aborted = true;
      if (spec.capture) {
        result.stdout = Buffer.concat(out).toString('utf8');
        result.stderr = Buffer.concat(err).toString('utf8');
      }
      return result;
    },
    dispose() {
      if (timeout) clearTimeout(timeout);
      if (killTimer) clearTimeout(killTimer);
      spec.signal?.removeEventListener('abort', onAbort);
    },
  };
}

export function signalNumber(signal: string): number {
  return (osConstants.signals as Record<string, number>)[signal] ?? 0;
}

export function signalName(n: number): string | undefined {
  for (const [name, num] of Object.entries(osConstants.signals)) if (num === n) return name;
  return undefined;
}
