import type { ErrorCode } from './error-codes.js';

/**
 * What kind of failure an error raised below the phases is. The buildpack contract (buildpack/) does not know
 * the platform's exit-code table; the phases map a kind to its CNB exit code (platform/exit-codes.ts).
 */
export type ErrorKind =
  /** A buildpack declares no, a malformed or an unsupported Buildpack API. */
  | 'incompatible-buildpack-api'
  /** A buildpack's bin/build failed: missing, not executable, could not start, or exited non-zero. */
  | 'buildpack-failed'
  /** The order cannot be resolved into groups (a composite buildpack contains itself). */
  | 'invalid-order';

/**
 * The one user-facing error class. `code` is stable (tests and scripts match on it), `message` says what
 * failed and why, `hint` says what to do. `exitCode` lets lifecycle phases carry the CNB exit code; `kind`
 * lets code below the phases say what failed without knowing that table.
 * Programmer errors stay plain `Error`.
 */
export class PackfarmError extends Error {
  readonly code: ErrorCode;
  readonly hint: string | undefined;
  readonly exitCode: number;
  readonly kind: ErrorKind | undefined;

  constructor(
    code: ErrorCode,
    message: string,
    options: { hint?: string; exitCode?: number; kind?: ErrorKind; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PackfarmError';
    this.code = code;
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? 1;
    this.kind = options.kind;
  }
}

export function isPackfarmError(err: unknown, code?: ErrorCode): err is PackfarmError {
  return err instanceof PackfarmError && (code === undefined || err.code === code);
}

/** Render a zod issue path like `manifests[0].digest`. */
export function formatIssuePath(path: ReadonlyArray<PropertyKey>): string {
  let out = '';
  for (const part of path) {
    if (typeof part === 'number') out += `[${part}]`;
    else out += out === '' ? String(part) : `.${String(part)}`;
  }
  return out || '(root)';
}
