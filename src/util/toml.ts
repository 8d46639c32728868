// The only module that knows which TOML library we use, so the parser can be swapped.
import TOML from '@iarna/toml';
import { PackfarmError } from './errors.js';

export type TomlTable = Record<string, unknown>;

/** Parse TOML text; errors name the source file and the line/column. */
export function parseToml(text: string, source: string): TomlTable {
  try {
    // @iarna/toml returns objects with symbol-tagged prototypes; normalise to plain JSON-like data.
    return plain(TOML.parse(text)) as TomlTable;
  } catch (err) {
    const e = err as { line?: number; col?: number; message: string };
    const where = e.line === undefined ? '' : ` at line ${e.line + 1}, column ${(e.col ?? 0) + 1}`;
    throw new PackfarmError('INVALID_TOML', `${source}: not valid TOML${where}: ${reason(e.message)}`, {
      cause: err,
    });
  }
}

/** Serialise a table to TOML. Keys with undefined values are dropped. */
export function stringifyToml(value: TomlTable): string {
  return TOML.stringify(dropUndefined(value) as TOML.JsonMap);
}

/**
 * The parser's reason as the end of one sentence: its first line, without the position it repeats ("at row 3,
 * col 1, pos 15:", already given as line and column), lower-cased, ending with a full stop.
 */
function reason(message: string): string {
  const first = (message.split('\n')[0] ?? message)
    .replace(/\s*at row \d+, col \d+, pos \d+:?\s*$/, '')
    .trim();
  const text = first.charAt(0).toLowerCase() + first.slice(1);
  return /[.!?]$/.test(text) ? text : `${text}.`;
}

function plain(v: unknown): unknown {
  if (v instanceof Date) return v.toISOString();
  if (Array.isArray(v)) return v.map(plain);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(v)) out[k] = plain(val);
    return out;
  }
  return v;
}

function dropUndefined(v: unknown): unknown {
  if (Array.isArray(v)) return v.filter((x) => x !== undefined).map(dropUndefined);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(v)) if (val !== undefined) out[k] = dropUndefined(val);
    return out;
  }
  return v;
}
