import { exitCodeOf } from '../platform/exit-codes.js';
import { isPackfarmError } from '../util/errors.js';

/** Where the CLI prints. Injected so tests can capture output; only cli/ writes to the terminal. */
export interface CliIO {
  out(text: string): void;
  err(text: string): void;
  /** Exact bytes to stdout, nothing added (e.g. `--raw` manifests, whose digest must match). */
  raw?(bytes: Uint8Array): void;
  /** Whether `out` is a terminal (status lines redrawn in place). */
  isTTY?: boolean;
  /** Text to stdout as it is (no newline added): cursor movement for status lines. */
  rawText?(text: string): void;
}

/** Write exact bytes where the IO supports it (the terminal does; test captures may take text). */
export function writeRaw(io: CliIO, bytes: Uint8Array): void {
  if (io.raw) io.raw(bytes);
  else io.out(Buffer.from(bytes).toString('utf8'));
}

export const processIO: CliIO = {
  out: (t) => process.stdout.write(t.endsWith('\n') ? t : `${t}\n`),
  err: (t) => process.stderr.write(t.endsWith('\n') ? t : `${t}\n`),
  raw: (b) => process.stdout.write(b),
  isTTY: process.stdout.isTTY === true,
  rawText: (t) => process.stdout.write(t),
};

/** Print an error for a human (or as one JSON line) and return the exit code to use. */
export function reportError(io: CliIO, err: unknown, json: boolean): number {
  if (isPackfarmError(err)) {
    if (json) io.err(JSON.stringify({ error: { code: err.code, message: err.message, hint: err.hint } }));
    else io.err(`error: ${err.message}${err.hint ? `\nhint: ${err.hint}` : ''}`);
    return exitCodeOf(err);
  }
  const e = err as Error;
  if (json) io.err(JSON.stringify({ error: { code: 'INTERNAL', message: e?.message ?? String(err) } }));
  else io.err(`internal error: ${e?.stack ?? String(err)}`);
  return 70;
}

/** Collect a repeatable option's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}
