import type { z } from 'zod';
import { PackfarmError, formatIssuePath } from './errors.js';
import type { ErrorCode } from './error-codes.js';

/**
 * Parse `value` with `schema`; on failure throw a PackfarmError naming the source (a file or URL), each
 * offending field and what was expected.
 */
export function parseWith<S extends z.ZodType>(
  schema: S,
  value: unknown,
  source: string,
  code: ErrorCode = 'INVALID_DOCUMENT',
): z.output<S> {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const problems = result.error.issues
    .slice(0, 8)
    .map((issue) => `${formatIssuePath(issue.path)}: ${issue.message}`)
    .join('; ');
  throw new PackfarmError(code, `${source}: invalid content: ${problems}`, { cause: result.error });
}

/** JSON.parse with an error that names the source. */
export function parseJson(text: string, source: string): unknown {
  try {
    return JSON.parse(text);
  } catch (err) {
    throw new PackfarmError('INVALID_JSON', `${source}: not valid JSON: ${(err as Error).message}`, {
      cause: err,
    });
  }
}
