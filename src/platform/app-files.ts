import { isUtf8 } from 'node:buffer';
import { constants as fsConstants, lstatSync, readdirSync, readlinkSync } from 'node:fs';
import type { Dirent } from 'node:fs';
import { chmod, copyFile, mkdir, rm, symlink, utimes } from 'node:fs/promises';
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

/** The names in `dir` that are not valid UTF-8, keyed by their lossy decoding. */
function invalidUtf8Names(dir: string): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  for (const raw of readdirSync(dir, { encoding: 'buffer' }))
    if (!isUtf8(raw)) out.set(raw.toString('utf8'), raw);
  return out;
}

/** Printable ASCII as is, every other byte as \xHH: a name that cannot be printed as text, shown exactly. */
function escapeName(raw: Buffer): string {
  let out = '';
  for (const b of raw)
    out +=
      b >= 0x20 && b < 0x7f && b !== 0x5c ? String.fromCharCode(b) : `\\x${b.toString(16).padStart(2, '0')}`;
  return out;
}

function describeEntry(root: string, r: string, e: Dirent, source: boolean): TreeEntry {
  const path = join(root, r);
  try {
    const st = lstatSync(path);
    const entry: TreeEntry = {
      kind: e.isDirectory() ? 'dir' : e.isSymbolicLink() ? 'symlink' : 'file',
      mode: st.mode & 0o7777,
      size: st.size,
      mtimeMs: st.mtimeMs,
    };
    if (entry.kind === 'symlink') entry.target = readlinkSync(path);
    return entry;
  } catch (err) {
    throw new PackfarmError(
      'APP_UNREADABLE',
      `${path}: cannot read this ${source ? 'app' : 'workspace'} entry: ${(err as Error).message}`,
      { cause: err },
    );
  }
}

interface TreeEntry {
  kind: 'dir' | 'file' | 'symlink';
  mode: number;
  size: number;
  mtimeMs: number;
  target?: string;
}

/**
 * Every entry below `root` that the filter keeps (sockets, fifos and devices are left out). Synchronous on
 * purpose: listing is tens of thousands of tiny system calls, which the thread pool makes ten times slower,
 * and nothing else runs while a build prepares its workspace.
 */
function listTree(root: string, filter: AppFileFilter | undefined, source: boolean): Map<string, TreeEntry> {
  const out = new Map<string, TreeEntry>();
  const walk = (rel: string): void => {
    const dir = rel === '' ? root : join(root, rel);
    let entries: Dirent[];
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch (err) {
      if (!source && (err as { code?: string }).code === 'ENOENT') return;
      throw new PackfarmError(
        'APP_UNREADABLE',
        `${dir}: cannot read this ${source ? 'app' : 'workspace'} directory: ${(err as Error).message}`,
        {
          cause: err,
          ...(source
            ? {
                hint:
                  rel === ''
                    ? 'check --path'
                    : 'make it readable (chmod a+rx) or exclude it in project.toml [io.buildpacks] exclude',
              }
            : {}),
        },
      );
    }
    // A name that is not UTF-8 comes back with U+FFFD in place of its bad bytes, and then names no file.
    const lossy = entries.some((e) => e.name.includes('\uFFFD'));
    const invalid = lossy ? invalidUtf8Names(dir) : new Map<string, Buffer>();
    for (const e of entries) {
      if (!e.isDirectory() && !e.isFile() && !e.isSymbolicLink()) continue;
      const r = rel === '' ? e.name : `${rel}/${e.name}`;
      if (filter && !filter(r, e.isDirectory())) continue;
      const raw = invalid.get(e.name);
      if (raw)
        throw new PackfarmError(
          'APP_FILE_NAME_INVALID',
          `${dir}/${escapeName(raw)}: the file name is not valid UTF-8 (shown with \\x escapes)`,
          {
            hint: 'rename it: image layers, project.toml patterns and buildpacks see names as UTF-8 text',
          },
        );
      const entry = describeEntry(root, r, e, source);
      out.set(r, entry);
      if (entry.kind === 'dir') walk(r);
    }
  };
  walk('');
  return out;
}

export interface SyncResult {
  /** Files and links copied or created. */
  copied: number;
  /** Entries of the workspace that were not (or no longer) in the app: removed. */
  removed: number;
  /** Files left as they were: same type, size, mode and mtime as the app's. */
  kept: number;
}

/**
 * Make `to` hold exactly the app's files (after the filter), copying only what differs from what is there:
 * a file is kept when its size, mode and mtime equal the app file's (copies get the app file's mtime, so a
 * file a buildpack changed differs and is copied again); everything not in the app is removed. On an empty
 * `to` this is a full copy. Buildpacks may change the workspace; the user's directory is never written.
 */
export async function syncAppDir(
  from: string,
  to: string,
  filter: AppFileFilter | undefined,
): Promise<SyncResult> {
  const result: SyncResult = { copied: 0, removed: 0, kept: 0 };
  await mkdir(to, { recursive: true });
  const want = listTree(from, filter, true);
  const have = listTree(to, undefined, false);

  // Remove what the app does not have, or has as another kind (deepest first; rm takes subtrees along).
  const stale = [...have.keys()]
    .filter((r) => {
      const w = want.get(r);
      const h = have.get(r) as TreeEntry;
      return !w || w.kind !== h.kind || (w.kind === 'symlink' && w.target !== h.target);
    })
    .sort((a, b) => b.length - a.length);
  const removed = new Set(stale);
  for (const r of stale) {
    if (isBelowAny(r, removed)) continue;
    await rm(join(to, r), { recursive: true, force: true });
    result.removed++;
  }
  const present = (r: string) => have.has(r) && !removed.has(r) && !isBelowAny(r, removed);

  const limit = pLimit(COPY_CONCURRENCY);
  const copies: Array<Promise<void>> = [];
  const dirs: Array<[string, number]> = [];
  // Sorted: parents before children.
  for (const r of [...want.keys()].sort()) {
    const w = want.get(r) as TreeEntry;
    const dst = join(to, r);
    if (w.kind === 'dir') {
      if (!present(r)) await mkdir(dst);
      dirs.push([dst, w.mode]);
    } else if (w.kind === 'symlink') {
      if (!present(r)) {
        await symlink(w.target as string, dst);
        result.copied++;
      } else result.kept++;
    } else {
      const h = present(r) ? have.get(r) : undefined;
      // utimes round-trips through floating-point seconds: equal within a millisecond is equal.
      if (h && h.size === w.size && h.mode === w.mode && Math.abs(h.mtimeMs - w.mtimeMs) < 1) {
        result.kept++;
        continue;
      }
      result.copied++;
      copies.push(
        limit(async () => {
          if (h) await rm(dst, { force: true });
          try {
            // copyFile gives the copy the source's permission bits (libuv), so no chmod.
            await copyFile(join(from, r), dst, fsConstants.COPYFILE_FICLONE);
          } catch (err) {
            throw copyError(join(from, r), err);
          }
          await utimes(dst, w.mtimeMs / 1000, w.mtimeMs / 1000);
        }),
      );
    }
  }
  await Promise.all(copies);
  // Modes of directories last: a read-only directory must not stop the copies into it.
  for (const [dst, mode] of dirs.reverse()) await chmod(dst, mode);
  return result;
}

/** Why an app file could not be copied into the workspace, naming it; unreadable files say so plainly. */
function copyError(path: string, err: unknown): PackfarmError {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'EACCES' || code === 'EPERM')
    return new PackfarmError('APP_FILE_UNREADABLE', `${path}: cannot read this app file: permission denied`, {
      cause: err,
      hint: 'make it readable by the user running packfarm (chmod a+r), or exclude it in project.toml [io.buildpacks] exclude',
    });
  return new PackfarmError(
    'APP_UNREADABLE',
    `${path}: cannot copy this app file into the build workspace: ${(err as Error).message}`,
    {
      cause: err,
    },
  );
}

function isBelowAny(rel: string, dirs: ReadonlySet<string>): boolean {
  const parts = rel.split('/');
  for (let i = 1; i < parts.length; i++) if (dirs.has(parts.slice(0, i).join('/'))) return true;
  return false;
}

const COPY_CONCURRENCY = 16;
