import { randomBytes } from 'node:crypto';
import { link, lstat, readFile, rm, unlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { PackfarmError } from './errors.js';
import { processAlive } from './process.js';

/**
 * packfarm's one lock between processes (and between async tasks of one process): a file at `lockPath`
 * holding its owner's pid, host and a random token. It guards a layout's index.json for milliseconds and a
 * build dir for a whole build.
 *
 * Taking: the owner is written to a temp file that is then hard-linked to `lockPath`, so the lock appears
 * atomically and complete (link fails with EEXIST when it is held); it is never seen half-written.
 *
 * Stale: a lock is stale when its owner is a process on this host that no longer exists, or when it is older
 * than `staleMs` (for a lock that owners hold for milliseconds, an old one means a frozen owner, or one on
 * another host sharing the directory). A lock whose owner cannot be read (another program's, or an older
 * packfarm's directory lock) is stale after 10 s.
 *
 * Taking over a stale lock is atomic: "see it dead, remove it, create mine" would let a slow waiter remove
 * the fresh lock of a faster one. So a waiter first creates `<lockPath>.break-<id of the stale lock>` (again
 * by link: one waiter wins), checks that the lock is still that same stale one, and only then removes it.
 * No one else can remove or replace a held lock meanwhile: its owner is dead, and other breakers lose the
 * race for the same break file. Releasing goes through the owner's own break file, so a release never races a
 * takeover either. A break file left by a breaker that died is itself stale (dead pid, or 10 s old).
 */
export interface LockOptions {
  /** How long to wait while a live owner holds the lock; 0 fails at once (default 60 s). */
  timeoutMs?: number;
  /** A lock older than this is stale whatever its owner (default 30 s; Infinity: only a dead owner). */
  staleMs?: number;
  /** The error when the lock stays held; default LOCK_TIMEOUT naming the lock and its owner. */
  busy?: (owner: LockOwner | undefined) => Error;
}

export interface LockOwner {
  pid: number;
  host: string;
  token: string;
}

export interface HeldLock {
  readonly path: string;
  readonly owner: LockOwner;
  release(): Promise<void>;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const DEFAULT_STALE_MS = 30_000;
const UNOWNED_STALE_MS = 10_000;

/** Take the lock, waiting up to `timeoutMs` for a live owner; stale locks are taken over. */
export async function acquireLock(lockPath: string, opts: LockOptions = {}): Promise<HeldLock> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
  const owner = newOwner();
  const started = Date.now();
  let delay = 5;
  for (;;) {
    if (await createExclusive(lockPath, owner))
      return { path: lockPath, owner, release: () => releaseLock(lockPath, owner) };
    const seen = await inspect(lockPath);
    if (seen === undefined) continue; // released between our try and our look
    if (isStale(seen, staleMs) && (await breakStale(lockPath, seen))) continue;
    if (Date.now() - started >= timeoutMs) {
      throw (
        opts.busy?.(seen.owner) ??
        new PackfarmError(
          'LOCK_TIMEOUT',
          `${lockPath}: could not take the lock within ${Math.round(timeoutMs / 1000)} s` +
            (seen.owner ? ` (held by pid ${seen.owner.pid} on ${seen.owner.host})` : ''),
          { hint: `if no packfarm process is using this directory, delete ${lockPath}` },
        )
      );
    }
    await sleep(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 100);
  }
}

// Async tasks of this process queue here first, so they do not poll the lock file against each other.
const localQueues = new Map<string, Promise<unknown>>();

/** Run `fn` holding the lock (waiting for it as `acquireLock` does); released however `fn` ends. */
export async function withFileLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  opts: LockOptions = {},
): Promise<T> {
  const previous = localQueues.get(lockPath) ?? Promise.resolve();
  let done!: () => void;
  const mine = new Promise<void>((r) => {
    done = r;
  });
  const tail = previous.then(() => mine);
  localQueues.set(lockPath, tail);
  try {
    await previous;
    const lock = await acquireLock(lockPath, opts);
    try {
      return await fn();
    } finally {
      await lock.release();
    }
  } finally {
    done();
    if (localQueues.get(lockPath) === tail) localQueues.delete(lockPath);
  }
}

function newOwner(): LockOwner {
  return { pid: process.pid, host: hostname(), token: randomBytes(12).toString('hex') };
}

/** Create `path` holding `owner`, complete or not at all; false when it already exists. */
async function createExclusive(path: string, owner: LockOwner): Promise<boolean> {
  const temp = `${path}.new-${owner.pid}-${randomBytes(6).toString('hex')}`;
  await writeFile(temp, JSON.stringify(owner), { mode: 0o644 });
  try {
    await link(temp, path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'EEXIST') return false;
    throw err;
  } finally {
    await unlink(temp).catch(() => {});
  }
}

interface SeenLock {
  /** The owner's token, or (for an unreadable owner) the file's inode: what a takeover must still find. */
  id: string;
  owner: LockOwner | undefined;
  ageMs: number;
}

async function inspect(path: string): Promise<SeenLock | undefined> {
  let st: Awaited<ReturnType<typeof lstat>>;
  try {
    st = await lstat(path);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const owner = st.isFile() ? await readOwner(path) : undefined;
  return { id: owner?.token ?? `ino${st.ino}`, owner, ageMs: Date.now() - st.mtimeMs };
}

function isStale(seen: SeenLock, staleMs: number): boolean {
  if (!seen.owner) return seen.ageMs > Math.min(staleMs, UNOWNED_STALE_MS);
  if (seen.owner.host === hostname() && !processAlive(seen.owner.pid)) return true;
  return seen.ageMs > staleMs;
}

/** Remove the stale lock `seen` if it is still there; true when this waiter settled it (it may retry). */
async function breakStale(lockPath: string, seen: SeenLock): Promise<boolean> {
  const breaker = `${lockPath}.break-${seen.id}`;
  if (!(await createExclusive(breaker, newOwner()))) {
    // Another waiter is breaking the same lock. If it died doing so, clear its break file for the next round.
    const other = await inspect(breaker);
    if (other === undefined) return true;
    if (isStale(other, UNOWNED_STALE_MS)) await rm(breaker, { force: true });
    return false;
  }
  try {
    const now = await inspect(lockPath);
    // `recursive` also clears the directory lock older packfarm versions made for build dirs.
    if (now?.id === seen.id) await rm(lockPath, { recursive: true, force: true });
    return true;
  } finally {
    await rm(breaker, { force: true });
  }
}

async function releaseLock(lockPath: string, owner: LockOwner): Promise<void> {
  const breaker = `${lockPath}.break-${owner.token}`;
  // Someone is taking our lock over as stale (we were frozen past staleMs): it is theirs to remove.
  if (!(await createExclusive(breaker, owner))) return;
  try {
    if ((await readOwner(lockPath))?.token === owner.token) await unlink(lockPath).catch(() => {});
  } finally {
    await rm(breaker, { force: true });
  }
}

async function readOwner(path: string): Promise<LockOwner | undefined> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as Partial<LockOwner>;
    if (typeof v.pid === 'number' && typeof v.host === 'string' && typeof v.token === 'string')
      return { pid: v.pid, host: v.host, token: v.token };
  } catch {
    // Missing, or not a lock of ours: no owner known.
  }
  return undefined;
}

/**
 * Whether the lock at `lockPath` is held by a process that may still be working: one alive on this host, one
 * on another host (which cannot be checked from here), or one whose owner is not readable yet (a lock being
 * taken). False when there is no lock, or its owner on this host is gone. Reads what older packfarm versions
 * wrote as well: a directory lock holding a `pid` file, and file locks without a token.
 */
export async function lockHeldByLiveOwner(lockPath: string): Promise<boolean> {
  const st = await lstat(lockPath).catch(() => undefined);
  if (!st) return false;
  let holder: { pid: number; host?: string } | undefined;
  if (st.isDirectory()) {
    const pid = Number((await readFile(`${lockPath}/pid`, 'utf8').catch(() => '')).trim());
    holder = pid ? { pid } : undefined;
  } else {
    try {
      const v = JSON.parse(await readFile(lockPath, 'utf8')) as { pid?: unknown; host?: unknown };
      if (typeof v.pid === 'number')
        holder = { pid: v.pid, ...(typeof v.host === 'string' ? { host: v.host } : {}) };
    } catch {
      holder = undefined;
    }
  }
  if (!holder) return true;
  if (holder.host !== undefined && holder.host !== hostname()) return true;
  return processAlive(holder.pid);
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
