import { randomBytes } from 'node:crypto';
import { link, open, readFile, rename, stat, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import { PackfarmError } from '../util/errors.js';

/**
 * An exclusive lock between processes (and between async tasks of one process) guarding a read-modify-write
 * of a small file such as a layout's index.json. The lock is a file created with O_EXCL; it holds the
 * owner's pid, host and a random token.
 *
 * A lock counts as stale when its owner is a process on this host that no longer exists, or when it is
 * older than `staleMs` (owners hold it for milliseconds, so an old lock means a crashed or frozen owner, or
 * an owner on another host sharing the directory). Stale locks are taken over by renaming them aside and
 * checking that what was renamed is still the lock judged stale, so two waiters cannot both break it.
 */
export interface FileLockOptions {
  /** Give up after this long (default 60 s). */
  timeoutMs?: number;
  /** A lock older than this is stale whatever its owner (default 30 s). */
  staleMs?: number;
}

interface LockOwner {
  pid: number;
  host: string;
  token: string;
}

const DEFAULT_TIMEOUT_MS = 60_000;
const DEFAULT_STALE_MS = 30_000;

// Async tasks of this process queue here first, so they do not poll the lock file against each other.
const localQueues = new Map<string, Promise<unknown>>();

export async function withFileLock<T>(
  lockPath: string,
  fn: () => Promise<T>,
  opts: FileLockOptions = {},
): Promise<T> {
  const previous = localQueues.get(lockPath) ?? Promise.resolve();
  let release!: () => void;
  const mine = new Promise<void>((r) => {
    release = r;
  });
  const tail = previous.then(() => mine);
  localQueues.set(lockPath, tail);
  try {
    await previous;
    const owner = await acquire(lockPath, opts);
    try {
      return await fn();
    } finally {
      await releaseLock(lockPath, owner);
    }
  } finally {
    release();
    if (localQueues.get(lockPath) === tail) localQueues.delete(lockPath);
  }
}

async function acquire(lockPath: string, opts: FileLockOptions): Promise<LockOwner> {
  const timeoutMs = opts.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const staleMs = opts.staleMs ?? DEFAULT_STALE_MS;
  const owner: LockOwner = { pid: process.pid, host: hostname(), token: randomBytes(12).toString('hex') };
  const started = Date.now();
  let delay = 5;
  for (;;) {
    try {
      const fh = await open(lockPath, 'wx', 0o644);
      try {
        await fh.writeFile(JSON.stringify(owner));
      } finally {
        await fh.close();
      }
      return owner;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    if (await breakIfStale(lockPath, staleMs)) continue;
    if (Date.now() - started > timeoutMs) {
      const holder = await readOwner(lockPath);
      throw new PackfarmError(
        'LOCK_TIMEOUT',
        `${lockPath}: could not take the lock within ${Math.round(timeoutMs / 1000)} s` +
          (holder ? ` (held by pid ${holder.pid} on ${holder.host})` : ''),
        { hint: `if no packfarm process is using this directory, delete ${lockPath}` },
      );
    }
    await sleep(delay + Math.random() * delay);
    delay = Math.min(delay * 2, 100);
  }
}

async function breakIfStale(lockPath: string, staleMs: number): Promise<boolean> {
  let mtimeMs: number;
  try {
    mtimeMs = (await stat(lockPath)).mtimeMs;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw err;
  }
  const holder = await readOwner(lockPath);
  const old = Date.now() - mtimeMs > staleMs;
  // A lock file still being written has no parsable owner yet: only its age can make it stale.
  const deadOwner = holder !== undefined && holder.host === hostname() && !processAlive(holder.pid);
  if (!old && !deadOwner) return false;

  const aside = `${lockPath}.stale.${process.pid}.${randomBytes(6).toString('hex')}`;
  try {
    await rename(lockPath, aside);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return true;
    throw err;
  }
  const moved = await readOwner(aside);
  if (holder !== undefined && moved?.token !== holder.token) {
    // Between our look and the rename another waiter broke the stale lock and took a fresh one: put it back
    // (link fails if yet another lock appeared meanwhile, which then stays the valid one).
    await link(aside, lockPath).catch(() => {});
  }
  await unlink(aside).catch(() => {});
  return true;
}

async function releaseLock(lockPath: string, owner: LockOwner): Promise<void> {
  const current = await readOwner(lockPath);
  // Only remove our own lock: if it was judged stale and taken over, the file is someone else's now.
  if (current?.token === owner.token) await unlink(lockPath).catch(() => {});
}

async function readOwner(path: string): Promise<LockOwner | undefined> {
  try {
    const v = JSON.parse(await readFile(path, 'utf8')) as Partial<LockOwner>;
    if (typeof v.pid === 'number' && typeof v.host === 'string' && typeof v.token === 'string')
      return { pid: v.pid, host: v.host, token: v.token };
  } catch {
    // Missing, half-written or foreign content: no owner known.
  }
  return undefined;
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}
