import { exitCodeOf } from '../platform/exit-codes.js';
import { isPackfarmError } from '../util/errors.js';

/** Where the CLI prints. Injected so tests can capture output; only cli/ writes to the terminal. */
export interface CliIO {
  out(text: string): void;
  err(text: string): void;
  /** Exact bytes to stdout, nothing added (e.g. `--raw` manifests, whose digest must match). */
  raw?(bytes: Uint8Array): void;
  /** Aborted when the user interrupts (SIGINT, SIGTERM): commands pass it on to the API and executors. */
  signal?: AbortSignal;
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

/** The width every --help fits in (commander's help wraps there too; test/integration/system-cli.test.ts). */
export const HELP_WIDTH = 80;

/**
 * One line of help text as lines of at most `width` columns, broken at spaces; continuation lines start with
 * `indent` spaces. A word longer than a whole line stays whole (a path is not broken).
 */
export function wrapLine(line: string, indent: number, width = HELP_WIDTH): string[] {
  if (line.length <= width) return [line];
  // Words with the spaces after them, so the spacing between columns survives where no break falls.
  const lead = /^ */.exec(line)![0];
  const parts = [...line.slice(lead.length).matchAll(/(\S+)( *)/g)].map((m) => [m[1]!, m[2]!] as const);
  const out: string[] = [];
  let current = lead;
  let gap = '';
  for (const [word, after] of parts) {
    if (current.trim() !== '' && current.length + gap.length + word.length > width) {
      out.push(current);
      current = ' '.repeat(indent) + word;
    } else current += gap + word;
    gap = after;
  }
  out.push(current);
  return out;
}

/**
 * Help notes written one sentence a line, long sentences over two: each sentence (a run of lines up to one
 * ending in `.`) rewrapped as a paragraph. Blank lines stay.
 */
export function wrapSentences(lines: readonly string[], width = HELP_WIDTH): string[] {
  const out: string[] = [];
  let pending: string[] = [];
  const flush = () => {
    if (pending.length > 0) out.push(...wrapLine(pending.join(' '), 0, width));
    pending = [];
  };
  for (const line of lines) {
    if (line.trim() === '') {
      flush();
      out.push(line);
      continue;
    }
    pending.push(line.trim());
    if (line.trimEnd().endsWith('.')) flush();
  }
  flush();
  return out;
}

/** A size for people: `512 B`, `3.4 MiB`, `12 GiB` (binary units; one decimal below 10). */
export function formatBytes(n: number): string {
  if (n < 1024) return `${n} B`;
  const units = ['KiB', 'MiB', 'GiB', 'TiB'];
  let v = n / 1024;
  let i = 0;
  while (v >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${v.toFixed(v < 10 ? 1 : 0)} ${units[i]}`;
}

/** Collect a repeatable option's values. */
export function collect(value: string, previous: string[] = []): string[] {
  return [...previous, value];
}

/** `--insecure-registry`, described one way on every command. */
export const INSECURE_REGISTRY_FLAG = '--insecure-registry <host[:port]>';
export const INSECURE_REGISTRY_HELP =
  'allow plain HTTP / unverified TLS for this registry (repeatable; also CNB_INSECURE_REGISTRIES; loopback registries need no flag)';
