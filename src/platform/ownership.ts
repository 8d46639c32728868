import { stat } from 'node:fs/promises';
import { type Owner, chownTree as walkChown } from '../util/chown.js';
import { PackfarmError } from '../util/errors.js';
import { EXIT } from './exit-codes.js';

/**
 * Who owns what a phase writes, the way the reference lifecycle hands its volumes to the build user: a phase
 * started as root (a platform's privileged container) makes the layers dir, the cache dir and its own output
 * files belong to `CNB_USER_ID:CNB_GROUP_ID`, so the unprivileged phases that follow (detector, builder, the
 * buildpacks) can write there. Also used by executors that mount those dirs into a build container.
 *
 * packfarm does not switch its own process to that user (the phases also run in-process through the API, where
 * a setuid would change the caller's process); it gives the files to the user instead, which leaves the same
 * owners on disk.
 */
export type { Owner };

/** Whether this process may hand files to another user (only root can). */
export function isPrivileged(): boolean {
  return process.getuid?.() === 0;
}

/**
 * The owner to apply, from `-uid`/`-gid` (CNB_USER_ID/CNB_GROUP_ID): only when both are given and this process
 * is root; otherwise there is nothing to hand over (an unprivileged process writes as itself anyway).
 */
export function ownerToApply(
  uid: string | number | undefined,
  gid: string | number | undefined,
): Owner | undefined {
  if (uid === undefined || uid === '' || gid === undefined || gid === '') return undefined;
  const owner = parseOwner(uid, gid);
  return isPrivileged() ? owner : undefined;
}

/** `-uid`/`-gid` as numbers (exit 3 on anything but non-negative integers). */
export function parseOwner(uid: string | number, gid: string | number): Owner {
  const u = Number(uid);
  const g = Number(gid);
  if (
    !/^\d+$/.test(String(uid)) ||
    !/^\d+$/.test(String(gid)) ||
    !Number.isSafeInteger(u) ||
    !Number.isSafeInteger(g)
  )
    throw new PackfarmError(
      'INVALID_ARGS',
      `-uid/-gid: expected non-negative integers, got "${uid}" and "${gid}"`,
      {
        exitCode: EXIT.INVALID_ARGS,
        hint: 'set CNB_USER_ID and CNB_GROUP_ID (or -uid/-gid) to the build user of the builder image',
      },
    );
  return { uid: u, gid: g };
}

const GROUP_WRITE = 0o020;
const WORLD_WRITE = 0o002;

/** Whether `owner` can already write a directory with these owners and mode (the reference's test). */
function writableBy(owner: Owner, s: { uid: number; gid: number; mode: number }): boolean {
  if (s.uid === owner.uid) return true;
  if (s.gid === owner.gid && (s.mode & GROUP_WRITE) !== 0) return true;
  return (s.mode & WORLD_WRITE) !== 0;
}

/**
 * Give each existing path to `owner`, recursively, unless `owner` can already write it: a dir the user owns, or
 * that its group or everyone may write, is taken to have usable contents too (walking a large cache on every
 * phase would cost more than it saves). Missing paths are skipped. Symlinks are re-owned, never followed.
 */
export async function ensureOwner(owner: Owner, paths: readonly (string | undefined)[]): Promise<void> {
  for (const p of paths) {
    if (!p) continue;
    let s: Awaited<ReturnType<typeof stat>>;
    try {
      s = await stat(p);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue;
      throw chownError(p, err);
    }
    if (writableBy(owner, s)) continue;
    await chownTree(p, owner);
  }
}

/** Give `path` and everything below it to `owner` (symlinks themselves, not their targets; missing is a no-op). */
export async function chownTree(path: string, owner: Owner): Promise<void> {
  try {
    await walkChown(path, owner, { missingOk: true });
  } catch (err) {
    // The filesystem's error names the entry that failed, which may lie deep below `path`.
    throw chownError((err as NodeJS.ErrnoException).path ?? path, err);
  }
}

/** Give the files a phase wrote to `owner` (missing ones are skipped: not every phase writes every file). */
export async function chownFiles(
  owner: Owner | undefined,
  paths: readonly (string | undefined)[],
): Promise<void> {
  if (!owner) return;
  for (const p of paths) if (p) await chownTree(p, owner);
}

function chownError(path: string, err: unknown): PackfarmError {
  return new PackfarmError('CHOWN_FAILED', `failed to chown volumes: ${path}: ${(err as Error).message}`, {
    cause: err,
    hint: 'run the phase as root to hand the layers and cache dirs to CNB_USER_ID:CNB_GROUP_ID, or create them owned by that user',
  });
}
