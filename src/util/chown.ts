import { chown, lchown, lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';

/** A numeric file owner (uid:gid). */
export interface Owner {
  readonly uid: number;
  readonly gid: number;
}

export interface ChownTreeOptions {
  /** Walk into directories (default true); false re-owns `path` alone. */
  recursive?: boolean;
  /**
   * Leave entries that already have this owner untouched. Worth it on large trees, and a chown even to the same
   * owner clears a file's setuid/setgid bits (the kernel does so for root too).
   */
  keepOwned?: boolean;
  /** Skip paths that are missing or vanish during the walk, instead of throwing ENOENT. */
  missingOk?: boolean;
}

/**
 * Give `path` (a directory with everything below it) to `owner`: the one tree walk that both the platform's
 * phases (platform/ownership.ts) and the executors (exec/view.ts) use. Symlinks are re-owned themselves, never
 * followed. Errors are the filesystem's own (their `path` names the entry that failed); callers wrap them.
 */
export async function chownTree(path: string, owner: Owner, opts: ChownTreeOptions = {}): Promise<void> {
  let s: Awaited<ReturnType<typeof lstat>>;
  try {
    s = await lstat(path);
  } catch (err) {
    if (opts.missingOk && (err as NodeJS.ErrnoException).code === 'ENOENT') return;
    throw err;
  }
  if (!opts.keepOwned || s.uid !== owner.uid || s.gid !== owner.gid) {
    if (s.isSymbolicLink()) await lchown(path, owner.uid, owner.gid);
    else await chown(path, owner.uid, owner.gid);
  }
  if (opts.recursive === false || !s.isDirectory()) return;
  for (const name of await readdir(path)) await chownTree(join(path, name), owner, opts);
}
