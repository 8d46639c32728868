import { readdir } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * Slices (buildpack.md "launch.toml [[slices]]"): each slice's `paths` are globs relative to the app dir; the
 * files they match become one layer, in slice order, a file belonging to the first slice that matches it (or
 * one of its parent directories). What no slice takes is the last app layer.
 */

/** A glob as a RegExp: `*` and `?` stay within one path segment, `**` spans segments, `[...]` is a class. */
export function globToRegExp(glob: string): RegExp {
  let g = glob.replace(/^\.\//, '').replace(/^\/+/, '').replace(/\/+$/, '');
  if (g === '' || g === '.') g = '**';
  let re = '';
  for (let i = 0; i < g.length; i++) {
    const c = g[i]!;
    if (c === '*') {
      if (g[i + 1] === '*') {
        const slashAfter = g[i + 2] === '/';
        re += slashAfter ? '(?:.*/)?' : '.*';
        i += slashAfter ? 2 : 1;
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = g.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        const body = g
          .slice(i + 1, end)
          .replace(/^!/, '^')
          .replaceAll('\\', '\\\\');
        re += `[${body}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  return new RegExp(`^${re}$`);
}

/** Whether `rel` ('/'-separated, relative to the app dir) or one of its parent directories matches. */
function matchesWithParents(rel: string, res: readonly RegExp[]): boolean {
  const parts = rel.split('/');
  for (let i = parts.length; i >= 1; i--) {
    const p = parts.slice(0, i).join('/');
    if (res.some((r) => r.test(p))) return true;
  }
  return false;
}

/**
 * Assign every non-directory entry of `appDir` to a slice index (0…n-1) or to the rest (n). Directories are
 * not assigned: every app layer carries the directories it needs (writeLayer keeps them all), so ownership and
 * modes of the tree survive whichever layers a file lands in.
 */
export async function assignSlices(
  appDir: string,
  slices: readonly { paths: string[] }[],
): Promise<Map<string, number>> {
  const res = slices.map((s) => s.paths.map(globToRegExp));
  const out = new Map<string, number>();
  const walk = async (dir: string, rel: string): Promise<void> => {
    const entries = await readdir(dir, { withFileTypes: true });
    for (const e of entries) {
      const r = rel ? `${rel}/${e.name}` : e.name;
      if (e.isDirectory()) await walk(join(dir, e.name), r);
      else {
        const idx = res.findIndex((set) => matchesWithParents(r, set));
        out.set(r, idx < 0 ? slices.length : idx);
      }
    }
  };
  if (slices.length > 0) await walk(appDir, '');
  return out;
}
