import { randomBytes } from 'node:crypto';
import { lstat, mkdtemp, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { processAlive } from './process.js';

/**
 * Temp files and dirs that name their owner: `packfarm-<kind>.p<pid>-<random>`. A process killed with
 * SIGKILL cannot clean up after itself; whoever next works in the same place removes what dead owners left
 * (`sweepDeadTemps`), and leaves alone what live processes are still writing.
 */
const OWNED = /^packfarm-([a-z][a-z0-9-]*)\.p(\d+)-/;

/**
 * What must happen before a dead owner's dir of a kind is removed, beyond deleting files: e.g. the oci
 * executor's state dir names containers a killed packfarm left running, which must be stopped first.
 */
const beforeRemove = new Map<string, (path: string) => Promise<void>>();

/**
 * Kinds whose leftovers must not be removed without their hook: a process that has not loaded the module
 * registering it (a `packfarm builder create` never loads the oci executor) leaves them to one that has.
 */
const HOOKED_KINDS = new Set(['oci']);

/** Register the clean-up a dead owner's `packfarm-<kind>.p<pid>-*` entry needs before it is removed. */
export function onSweep(kind: string, fn: (path: string) => Promise<void>): void {
  beforeRemove.set(kind, fn);
}

const swept = new Map<string, Promise<unknown>>();

/**
 * A fresh directory `<parent>/packfarm-<kind>.p<pid>-XXXXXX`. The first time a process makes one in
 * `parent`, it first sweeps what dead processes left there (in /tmp: builds, detects, plans, caches of
 * killed runs).
 */
export async function makeTempDir(parent: string, kind: string): Promise<string> {
  let sweeping = swept.get(parent);
  if (!sweeping) {
    // A failed sweep (a sibling vanished, a permission) must not fail the caller's work.
    sweeping = sweepDeadTemps(parent).catch(() => {});
    swept.set(parent, sweeping);
  }
  await sweeping;
  return mkdtemp(join(parent, `packfarm-${kind}.p${process.pid}-`));
}

/** A fresh file name `packfarm-<kind>.p<pid>-<random>.tmp` (no file is created). */
export function tempFileName(kind: string): string {
  return `packfarm-${kind}.p${process.pid}-${randomBytes(6).toString('hex')}.tmp`;
}

/** The pid a temp name records, if it is one of ours. */
export function tempOwner(name: string): number | undefined {
  const m = OWNED.exec(name);
  return m ? Number(m[2]) : undefined;
}

/**
 * Remove the temp files and dirs in `parent` whose owner process is gone. Returns the names removed. A
 * missing `parent` is fine. Only this host's pids are meaningful: don't share such a dir between machines.
 */
export async function sweepDeadTemps(parent: string): Promise<string[]> {
  let names: string[];
  try {
    names = await readdir(parent);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' || (err as NodeJS.ErrnoException).code === 'ENOTDIR')
      return [];
    throw err;
  }
  const removed: string[] = [];
  for (const name of names) {
    const pid = tempOwner(name);
    if (pid === undefined || pid === process.pid || processAlive(pid)) continue;
    const kind = OWNED.exec(name)![1]!;
    const hook = beforeRemove.get(kind);
    if (!hook && HOOKED_KINDS.has(kind)) continue;
    // A hook that fails (a runtime gone) must not keep the files: they are removed regardless.
    if (hook) await hook(join(parent, name)).catch(() => {});
    await rm(join(parent, name), { recursive: true, force: true });
    removed.push(name);
  }
  return removed;
}

/** Remove entries of `parent` matching `pattern` last modified more than `ageMs` ago (legacy, owner-less temps). */
export async function sweepOldEntries(parent: string, pattern: RegExp, ageMs: number): Promise<void> {
  let names: string[];
  try {
    names = await readdir(parent);
  } catch {
    return;
  }
  for (const name of names) {
    if (!pattern.test(name)) continue;
    const st = await lstat(join(parent, name)).catch(() => undefined);
    if (st && Date.now() - st.mtimeMs > ageMs) await rm(join(parent, name), { recursive: true, force: true });
  }
}
