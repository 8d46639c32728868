import { REPRODUCIBLE_EPOCH } from '../util/time.js';
import { PackfarmError } from '../util/errors.js';

/**
 * Layer entry order: names compared byte by byte (UTF-8) as if '/' sorted before every other byte. That is a
 * depth-first walk with each directory's children sorted bytewise, so a directory comes right before its own
 * contents and every subtree is contiguous (the order `tar --sort=name` produces).
 */
export function compareEntryNames(a: string, b: string): number {
  return Buffer.compare(sortKey(a), sortKey(b));
}

function sortKey(name: string): Buffer {
  const key = Buffer.from(name, 'utf8');
  for (let i = 0; i < key.length; i++) if (key[i] === 0x2f) key[i] = 0;
  return key;
}

/**
 * Normalise a layer prefix such as '/layers/my_bp/node/' to its components. `..` is refused: a prefix places
 * entries, it never climbs.
 */
export function prefixComponents(prefix: string | undefined): string[] {
  if (prefix === undefined) return [];
  const parts = prefix.split('/').filter((p) => p !== '' && p !== '.');
  for (const p of parts) {
    if (p === '..' || p.includes('\0')) {
      throw new PackfarmError(
        'INVALID_LAYER_PREFIX',
        `layer prefix "${prefix}" must not contain ".." or NUL`,
      );
    }
  }
  return parts;
}

/** Seconds for a tar header; the default is the reproducible-builds epoch used by the CNB lifecycle. */

export function mtimeSeconds(mtime: Date | undefined, max: number): number {
  const d = mtime ?? REPRODUCIBLE_EPOCH;
  const s = Math.floor(d.getTime() / 1000);
  if (!Number.isFinite(s) || s < 0 || s > max) {
    throw new PackfarmError(
      'INVALID_LAYER_MTIME',
      `layer mtime ${String(d)} is not between 1970-01-01 and ${new Date(max * 1000).toISOString()}`,
      { hint: 'check SOURCE_DATE_EPOCH / --creation-time' },
    );
  }
  return s;
}

export function checkId(value: number | undefined, field: 'uid' | 'gid'): number {
  const v = value ?? 0;
  if (!Number.isSafeInteger(v) || v < 0) {
    throw new PackfarmError('INVALID_LAYER_OWNER', `layer ${field} ${v} is not a non-negative integer`);
  }
  return v;
}
