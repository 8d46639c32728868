import { lstat, readdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { PackfarmError } from '../util/errors.js';
import { lockHeldByLiveOwner } from '../util/lock.js';

/**
 * `packfarm prune`: give back the disk space the data dir holds between builds.
 *
 *   <data dir>/builds/<key>/   a build's workspace (kept so a rebuild copies only changed app files)
 *   <data dir>/cache/<key>/    the default build cache of one image
 *   <data dir>/rootfs/<key>/   root filesystems unpacked for the OCI-runtime executor
 *
 * An entry is in use while `<entry>.lock` names a live process: a directory holding `pid` (openBuildDirs), or
 * a file holding `{"pid", "host"}` (image/lock.ts withFileLock, as exec/rootfs.ts takes it around an unpack;
 * an owner on another host counts as alive). `<entry>.tmp-*` (an unpack in progress) goes with its entry's
 * lock. Entries in use are never removed. Caches and root filesystems are used by builds without a lock of
 * their own, so while any build runs neither is removed. Of the rest, everything is removed, or with `olderThanMs` only entries last used
 * (the newest mtime of the entry and its direct children) longer ago than that. Images (`images/`) and
 * manifest lists (`manifests/`) are the user's results and are never touched.
 */
export type PruneKind = 'build' | 'cache' | 'rootfs';

export interface PruneOptions {
  dataDir: string;
  /** Only entries unused for longer than this (default: every entry not in use). */
  olderThanMs?: number;
  /** Report what would be freed without removing anything. */
  dryRun?: boolean;
  /** Clock (tests). */
  now?: number;
}

export interface PruneEntry {
  kind: PruneKind;
  path: string;
  bytes: number;
  lastUsed: string;
}

export interface PruneReport {
  dataDir: string;
  dryRun: boolean;
  removed: PruneEntry[];
  /** Entries left because a process uses them (or, for caches, because a build runs). */
  inUse: string[];
  freedBytes: number;
}

const DIRS: Array<[PruneKind, string]> = [
  ['build', 'builds'],
  ['cache', 'cache'],
  ['rootfs', 'rootfs'],
];

export async function prune(opts: PruneOptions): Promise<PruneReport> {
  const now = opts.now ?? Date.now();
  const report: PruneReport = {
    dataDir: opts.dataDir,
    dryRun: opts.dryRun === true,
    removed: [],
    inUse: [],
    freedBytes: 0,
  };
  const buildRunning = (await lockedEntries(join(opts.dataDir, 'builds'))).size > 0;
  for (const [kind, sub] of DIRS) {
    const dir = join(opts.dataDir, sub);
    const names = await readdir(dir).catch(() => [] as string[]);
    const locked = await lockedEntries(dir);
    for (const name of names) {
      if (name.endsWith('.lock') || /\.lock\.stale\./.test(name)) continue;
      const path = join(dir, name);
      const st = await lstat(path).catch(() => undefined);
      if (!st?.isDirectory()) continue;
      const owner = name.replace(/\.tmp-.*$/, '');
      if (locked.has(owner) || (kind !== 'build' && buildRunning)) {
        report.inUse.push(path);
        continue;
      }
      const lastUsed = await lastUse(path, st.mtimeMs);
      if (opts.olderThanMs !== undefined && now - lastUsed < opts.olderThanMs) continue;
      const bytes = await diskBytes(path);
      if (!opts.dryRun) {
        await rm(path, { recursive: true, force: true });
        // A stale lock (its owner died) goes with its entry.
        await rm(`${path}.lock`, { recursive: true, force: true });
      }
      report.removed.push({ kind, path, bytes, lastUsed: new Date(lastUsed).toISOString() });
      report.freedBytes += bytes;
    }
  }
  return report;
}

/** Names of entries in `dir` whose `<name>.lock` is held by a live process (util/lock.ts decides). */
async function lockedEntries(dir: string): Promise<Set<string>> {
  const out = new Set<string>();
  const names = await readdir(dir).catch(() => [] as string[]);
  for (const n of names.filter((x) => x.endsWith('.lock'))) {
    if (await lockHeldByLiveOwner(join(dir, n))) out.add(n.slice(0, -'.lock'.length));
  }
  return out;
}

async function lastUse(path: string, own: number): Promise<number> {
  let newest = own;
  for (const n of await readdir(path).catch(() => [] as string[])) {
    const st = await lstat(join(path, n)).catch(() => undefined);
    if (st && st.mtimeMs > newest) newest = st.mtimeMs;
  }
  return newest;
}

/** Bytes a tree occupies on disk (allocated blocks; hard links counted once). */
async function diskBytes(root: string): Promise<number> {
  const seen = new Set<string>();
  let total = 0;
  const walk = async (p: string): Promise<void> => {
    const st = await lstat(p).catch(() => undefined);
    if (!st) return;
    const id = `${st.dev}:${st.ino}`;
    if (seen.has(id)) return;
    seen.add(id);
    total += st.blocks * 512;
    if (st.isDirectory())
      for (const n of await readdir(p).catch(() => [] as string[])) await walk(join(p, n));
  };
  await walk(root);
  return total;
}

/** `30s`, `15m`, `12h`, `7d`, `2w` (or a bare number of seconds) in milliseconds. */
export function parseAge(text: string, flag = '--older-than'): number {
  const m = /^(\d+(?:\.\d+)?)\s*(s|m|h|d|w)?$/.exec(text.trim());
  if (!m)
    throw new PackfarmError('INVALID_ARGS', `${flag} ${JSON.stringify(text)}: not an age`, {
      hint: 'give a number with a unit: 30m, 12h, 7d, 2w (a bare number is seconds)',
    });
  const unit = { s: 1, m: 60, h: 3600, d: 86_400, w: 604_800 }[(m[2] ?? 's') as 's'];
  return Number(m[1]) * unit * 1000;
}

/** Used by `packfarm report`: bytes held per kind. */
export async function dataDirUsage(dataDir: string): Promise<Record<PruneKind | 'images', number>> {
  const out = { build: 0, cache: 0, rootfs: 0, images: 0 };
  for (const [kind, sub] of [...DIRS, ['images', 'images'] as const]) {
    const st = await stat(join(dataDir, sub)).catch(() => undefined);
    if (st?.isDirectory()) out[kind] = await diskBytes(join(dataDir, sub));
  }
  return out;
}
