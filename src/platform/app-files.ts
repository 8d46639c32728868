import { constants as fsConstants } from 'node:fs';
import type { Dirent } from 'node:fs';
import { chmod, copyFile, lstat, mkdir, readdir, readlink, symlink } from 'node:fs/promises';
import pLimit from 'p-limit';
import { join } from 'node:path';
import { PackfarmError } from '../util/errors.js';

/**
 * Which files of the app directory take part in a build: project.toml `include` / `exclude`
 * (extensions/project-descriptor.md), patterns in .gitignore syntax. The two are exclusive; with neither,
 * everything is in.
 *
 * Supported syntax: `*` (within one path segment), `?`, `**` (any number of segments), `[...]` classes,
 * a leading `/` anchoring at the app root, a trailing `/` for directories only, `!` re-including, `#`
 * comments. A pattern without a slash (other than a trailing one) matches a name at any depth, as in git.
 */
export type AppFileFilter = (relPath: string, isDir: boolean) => boolean;

interface Rule {
  negate: boolean;
  dirOnly: boolean;
  re: RegExp;
}

function compileRule(pattern: string): Rule | undefined {
  let p = pattern.trim();
  if (p === '' || p.startsWith('#')) return undefined;
  let negate = false;
  if (p.startsWith('!')) {
    negate = true;
    p = p.slice(1);
  }
  let dirOnly = false;
  if (p.endsWith('/')) {
    dirOnly = true;
    p = p.replace(/\/+$/, '');
  }
  const anchored = p.includes('/');
  p = p.replace(/^\/+/, '');
  if (p === '') return undefined;
  let re = '';
  for (let i = 0; i < p.length; i++) {
    const c = p[i] as string;
    if (c === '*') {
      if (p[i + 1] === '*') {
        // `**/` any leading dirs, `/**` everything below, `**` alone anything.
        if (p[i + 2] === '/') {
          re += '(?:.*/)?';
          i += 2;
        } else {
          re += '.*';
          i += 1;
        }
      } else re += '[^/]*';
    } else if (c === '?') re += '[^/]';
    else if (c === '[') {
      const end = p.indexOf(']', i + 1);
      if (end < 0) re += '\\[';
      else {
        re += `[${p
          .slice(i + 1, end)
          .replace(/^!/, '^')
          .replace(/\\/g, '\\\\')}]`;
        i = end;
      }
    } else re += c.replace(/[.+^${}()|\\]/g, '\\$&');
  }
  // A match of a directory covers everything inside it.
  const body = anchored ? `^${re}` : `(?:^|/)${re}`;
  return { negate, dirOnly, re: new RegExp(`${body}$`) };
}

function matches(rules: readonly Rule[], rel: string, isDir: boolean): boolean {
  let hit = false;
  for (const r of rules) {
    if (r.dirOnly && !isDir) continue;
    if (r.re.test(rel)) hit = !r.negate;
  }
  return hit;
}

export function appFileFilter(
  opts: { include?: readonly string[] | undefined; exclude?: readonly string[] | undefined },
  source = 'project.toml',
): AppFileFilter | undefined {
  const include = opts.include ?? [];
  const exclude = opts.exclude ?? [];
  if (include.length > 0 && exclude.length > 0) {
    throw new PackfarmError('PROJECT_INCLUDE_EXCLUDE', `${source}: include and exclude cannot both be set`, {
      hint: 'keep one of them (project descriptor spec)',
    });
  }
  if (exclude.length > 0) {
    const rules = exclude.map(compileRule).filter((r): r is Rule => r !== undefined);
    // Excluded when the path or any parent directory matches.
    return (rel, isDir) => !excludedByAncestry(rules, rel, isDir);
  }
  if (include.length > 0) {
    const rules = include.map(compileRule).filter((r): r is Rule => r !== undefined);
    return (rel, isDir) => {
      // Directories are walked whatever they are called: a file deep inside may be included.
      if (isDir) return true;
      return excludedByAncestry(rules, rel, false);
    };
  }
  return undefined;
}

/** True when `rel` or one of its parent directories matches. */
function excludedByAncestry(rules: readonly Rule[], rel: string, isDir: boolean): boolean {
  const parts = rel.split('/');
  for (let i = 1; i < parts.length; i++) {
    if (matches(rules, parts.slice(0, i).join('/'), true)) return true;
  }
  return matches(rules, rel, isDir);
}

/**
 * Copy the app's files into a fresh workspace (buildpacks may change the workspace; the user's checkout stays
 * as it was). Modes and symlinks are kept. Directories are made first, in one walk; file copies then run
 * several at a time (one at a time, small files leave the disk idle between system calls).
 */
export async function copyAppDir(
  from: string,
  to: string,
  filter: AppFileFilter | undefined,
): Promise<{ files: number }> {
  const stats = { files: 0 };
  await mkdir(to, { recursive: true });
  const files: Array<{ src: string; dst: string }> = [];
  const dirs: Array<{ dst: string; mode: number }> = [];
  await walk(from, to, '', filter, stats, files, dirs);
  const limit = pLimit(COPY_CONCURRENCY);
  // copyFile gives the copy the source's permission bits (libuv), so no chmod per file.
  await Promise.all(files.map((f) => limit(() => copyFile(f.src, f.dst, fsConstants.COPYFILE_FICLONE))));
  // Modes of directories last: a read-only directory must not stop the copies into it.
  for (const d of dirs.reverse()) await chmod(d.dst, d.mode);
  return stats;
}

const COPY_CONCURRENCY = 16;

async function walk(
  root: string,
  dest: string,
  rel: string,
  filter: AppFileFilter | undefined,
  stats: { files: number },
  files: Array<{ src: string; dst: string }>,
  dirs: Array<{ dst: string; mode: number }>,
): Promise<void> {
  const dir = rel === '' ? root : join(root, rel);
  let entries: Dirent[];
  try {
    entries = (await readdir(dir, { withFileTypes: true })).sort((a, b) =>
      a.name < b.name ? -1 : a.name > b.name ? 1 : 0,
    );
  } catch (err) {
    throw new PackfarmError(
      'APP_UNREADABLE',
      `${dir}: cannot read the app directory: ${(err as Error).message}`,
      {
        cause: err,
        hint: 'check --path',
      },
    );
  }
  for (const e of entries) {
    const r = rel === '' ? e.name : `${rel}/${e.name}`;
    const src = join(root, r);
    const dst = join(dest, r);
    if (filter && !filter(r, e.isDirectory())) continue;
    if (e.isDirectory()) {
      await mkdir(dst);
      dirs.push({ dst, mode: (await lstat(src)).mode & 0o7777 });
      await walk(root, dest, r, filter, stats, files, dirs);
    } else if (e.isSymbolicLink()) {
      await symlink(await readlink(src), dst);
      stats.files++;
    } else if (e.isFile()) {
      files.push({ src, dst });
      stats.files++;
    }
    // Sockets, fifos and devices have no place in an image layer: skipped.
  }
}
