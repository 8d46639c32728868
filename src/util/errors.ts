/**
 * The one user-facing error class. `code` is stable (tests and scripts match on it), `message` says what
 * failed and why, `hint` says what to do. `exitCode` lets lifecycle phases carry the CNB exit code.
 * Programmer errors stay plain `Error`.
 */
export class PackfarmError extends Error {
  readonly code: string;
  readonly hint: string | undefined;
  readonly exitCode: number;

  constructor(
    code: string,
    message: string,
    options: { hint?: string; exitCode?: number; cause?: unknown } = {},
  ) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PackfarmError';
    this.code = code;
    this.hint = options.hint;
    this.exitCode = options.exitCode ?? 1;
  }
}

export function isPackfarmError(err: unknown, code?: string): err is PackfarmError {
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
