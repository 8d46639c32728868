import { createHash } from 'node:crypto';
import * as nodeFs from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { Digest } from '../oci/digest.js';
import { isNotFound, writeFileAtomic } from '../util/fs.js';
import { type Logger, silentLogger } from '../util/log.js';
import { parseJson, parseWith } from '../util/validate.js';

/**
 * What a reused build dir remembers about its layer dirs between builds (spec/buildpacks.md "Reusing layer
 * dirs"): per buildpack layer, a fingerprint of the dir's tree (stat data, not content) and the diffID the
 * tree hashed to. A later build whose layer dir still has that fingerprint trusts the diffID instead of
 * extracting the cached layer again (restore) or tarring the dir again (export, cache). This is git's index
 * tradeoff: a change that keeps every stat field (size, mtime, ctime, inode…) goes unseen. ctime cannot be set
 * by a process, so a tampered file shows; `PACKFARM_TRUST_STAT=0` turns the whole thing off.
 */

/** How a layer dir was tarred: the diffID depends on these as much as on the files. */
export interface TarParams {
  prefix: string;
  uid: number;
  gid: number;
  /** Entry mtime, ISO. */
  mtime: string;
}

export interface LayerRecord extends TarParams {
  fingerprint: string;
  diffId: Digest;
}

/** The state file: records per `<buildpack id>:<layer>`, valid only for builds by the same owner. */
export interface LayerState {
  owner: { uid: number; gid: number } | null;
  layers: Record<string, LayerRecord>;
  /** Cached layer files (by diffID) verified by this build dir's last build, with their stat stamp then. */
  cacheBlobs: Record<string, string>;
}

const STATE_VERSION = 1;
const digestRe = /^sha256:[0-9a-f]{64}$/;
const StateFileSchema = z.object({
  version: z.literal(STATE_VERSION),
  owner: z.object({ uid: z.number().int(), gid: z.number().int() }).nullable(),
  layers: z.record(
    z.string(),
    z.object({
      fingerprint: z.string().regex(/^[0-9a-f]{64}$/),
      diffId: z.string().regex(digestRe),
      prefix: z.string(),
      uid: z.number().int(),
      gid: z.number().int(),
      mtime: z.string(),
    }),
  ),
  cacheBlobs: z.record(z.string().regex(digestRe), z.string()).default({}),
});

/** Whether stat data may stand in for content (default yes; `PACKFARM_TRUST_STAT=0` or `false` says no). */
export function trustStat(env: Readonly<Record<string, string | undefined>>): boolean {
  const v = env.PACKFARM_TRUST_STAT?.trim().toLowerCase();
  return !(v === '0' || v === 'false' || v === 'no' || v === 'off');
}

export const layerKey = (buildpackId: string, layer: string) => `${buildpackId}:${layer}`;

/** The file system calls a fingerprint needs (node:fs/promises, or memfs in tests). */
export interface FingerprintFs {
  lstat(path: string, opts: { bigint: true }): Promise<BigStatsLike>;
  readdir(path: string): Promise<string[]>;
  readlink(path: string): Promise<string>;
}

interface BigStatsLike {
  mode: bigint;
  uid: bigint;
  gid: bigint;
  size: bigint;
  ino: bigint;
  mtimeMs: bigint;
  ctimeMs: bigint;
  mtimeNs?: bigint;
  ctimeNs?: bigint;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
  isFile(): boolean;
}

export interface Fingerprint {
  /** sha256 (hex) over every entry's path, type, mode, owner, size, mtime and ctime (ns), inode, link target. */
  digest: string;
  /** The newest ctime in the tree, ns since the epoch. */
  maxCtimeNs: bigint;
  entries: number;
}

const defaultFs = nodeFs as unknown as FingerprintFs;

/** Fingerprint of the tree at `dir` (the dir itself included). Undefined when `dir` is not a directory. */
export async function fingerprintDir(
  dir: string,
  fs: FingerprintFs = defaultFs,
): Promise<Fingerprint | undefined> {
  let root: BigStatsLike;
  try {
    root = await fs.lstat(dir, { bigint: true });
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  if (!root.isDirectory()) return undefined;
  const hash = createHash('sha256');
  let maxCtimeNs = 0n;
  let entries = 0;
  const visit = async (rel: string, st: BigStatsLike): Promise<void> => {
    const type = st.isDirectory() ? 'd' : st.isSymbolicLink() ? 'l' : st.isFile() ? 'f' : 'o';
    const ctimeNs = st.ctimeNs ?? st.ctimeMs * 1_000_000n;
    const mtimeNs = st.mtimeNs ?? st.mtimeMs * 1_000_000n;
    if (ctimeNs > maxCtimeNs) maxCtimeNs = ctimeNs;
    const link = type === 'l' ? await fs.readlink(join(dir, rel)) : '';
    // JSON keeps every field unambiguous whatever bytes a name holds.
    hash.update(
      `${JSON.stringify([rel, type, st.mode.toString(8), `${st.uid}`, `${st.gid}`, `${st.size}`, `${mtimeNs}`, `${ctimeNs}`, `${st.ino}`, link])}\n`,
    );
    entries++;
    if (type !== 'd') return;
    const names = (await fs.readdir(join(dir, rel))).map(String).sort(byBytes);
    for (const name of names) {
      const childRel = rel === '.' ? name : `${rel}/${name}`;
      await visit(childRel, await fs.lstat(join(dir, childRel), { bigint: true }));
    }
  };
  await visit('.', root);
  return { digest: hash.digest('hex'), maxCtimeNs, entries };
}

function byBytes(a: string, b: string): number {
  return Buffer.compare(Buffer.from(a), Buffer.from(b));
}

/**
 * A file changed within the file system's timestamp granularity of the fingerprint could change again without
 * its ctime moving ("racy git"). Such a tree is fingerprinted again after that window; a tree still being
 * written gives undefined (not trusted, not recorded).
 */
const RACY_WINDOW_NS = 50_000_000n;

export async function stableFingerprint(
  dir: string,
  fs: FingerprintFs = defaultFs,
  now: () => bigint = () => BigInt(Date.now()) * 1_000_000n,
): Promise<Fingerprint | undefined> {
  let fp = await fingerprintDir(dir, fs);
  for (let i = 0; i < 3 && fp; i++) {
    if (now() - fp.maxCtimeNs > RACY_WINDOW_NS) return fp;
    await sleep(Number(RACY_WINDOW_NS / 1_000_000n) + 10);
    const again = await fingerprintDir(dir, fs);
    if (again?.digest !== fp.digest) {
      fp = again;
      continue;
    }
    if (now() - again.maxCtimeNs > RACY_WINDOW_NS) return again;
  }
  return undefined;
}

export const LAYER_STATE_FILE = 'layer-state.json';

/** The state a build dir holds; anything unreadable or of another version counts as none. */
export async function readLayerState(
  path: string,
  logger: Logger = silentLogger,
): Promise<LayerState | undefined> {
  let text: string;
  try {
    text = await nodeFs.readFile(path, 'utf8');
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
  try {
    const parsed = parseWith(StateFileSchema, parseJson(text, path), path);
    return {
      owner: parsed.owner,
      layers: parsed.layers as Record<string, LayerRecord>,
      cacheBlobs: parsed.cacheBlobs,
    };
  } catch (err) {
    logger.debug(`ignoring ${path}: ${(err as Error).message}`);
    return undefined;
  }
}

export async function writeLayerState(path: string, state: LayerState): Promise<void> {
  const sorted = <T>(o: Record<string, T>) =>
    Object.fromEntries(Object.entries(o).sort(([a], [b]) => (a < b ? -1 : 1)));
  const doc = {
    version: STATE_VERSION,
    owner: state.owner,
    layers: sorted(state.layers),
    cacheBlobs: sorted(state.cacheBlobs),
  };
  await writeFileAtomic(path, `${JSON.stringify(doc, null, 1)}\n`);
}

export const sameTarParams = (a: TarParams, b: TarParams) =>
  a.prefix === b.prefix && a.uid === b.uid && a.gid === b.gid && a.mtime === b.mtime;

/**
 * One build's view of the layer state: what the previous build recorded (`prior`), the lookups restore, export
 * and cache make against it, and the records this build will leave (`note`, then `save` after a successful
 * export and cache).
 */
export interface LayerTracker {
  readonly prior: LayerState | undefined;
  /** Every layer the state file named (whatever its owner): their dirs are still in the layers dir. */
  readonly candidates: readonly string[];
  /** The recorded diffID of `dir` when its tree still has the recorded fingerprint (restore's check). */
  recorded(key: string, dir: string): Promise<Digest | undefined>;
  /** The recorded diffID of a tree with fingerprint `fp` (taken now), tarred with `tar`; else undefined. */
  trusted(key: string, tar: TarParams, fp: Fingerprint | undefined): Digest | undefined;
  /** The diffID a layer dir hashed to now; `fingerprint` is the tree's before it was hashed. */
  note(key: string, dir: string, tar: TarParams, diffId: Digest, fingerprint: Fingerprint | undefined): void;
  /** Whether the last build verified the cached layer file `diffId` and it still has that stat `stamp`. */
  cacheBlobVerified(diffId: string, stamp: string): boolean;
  /** A cached layer file verified (or written) by this build, with its stamp after the cache was committed. */
  noteCacheBlob(diffId: string, stamp: string): void;
  /** Fingerprint for `note`: stable (not racy), or undefined. */
  fingerprint(dir: string): Promise<Fingerprint | undefined>;
  /** Write the state file: only layers whose tree is unchanged since it was hashed. */
  save(path: string): Promise<number>;
}

export function layerTracker(opts: {
  prior: LayerState | undefined;
  owner: { uid: number; gid: number } | null;
  fs?: FingerprintFs;
  logger?: Logger;
}): LayerTracker {
  const fs = opts.fs ?? defaultFs;
  const log = opts.logger ?? silentLogger;
  // A record made for another owner describes files a restore for this one would not produce.
  const prior = opts.prior && sameOwner(opts.prior.owner, opts.owner) ? opts.prior : undefined;
  const notes = new Map<string, { dir: string; record: LayerRecord }>();
  const cacheBlobs: Record<string, string> = {};
  // Not memoised: the same dir is looked at before and after the buildpacks ran.
  const fingerprint = (dir: string) => stableFingerprint(dir, fs);
  const recorded = async (key: string, dir: string) => {
    const rec = prior?.layers[key];
    if (!rec) return undefined;
    const fp = await fingerprint(dir);
    return fp?.digest === rec.fingerprint ? rec.diffId : undefined;
  };
  return {
    prior,
    candidates: Object.keys(opts.prior?.layers ?? {}),
    recorded,
    fingerprint,
    trusted(key, tar, fp) {
      const rec = prior?.layers[key];
      if (!rec || !sameTarParams(rec, tar)) return undefined;
      if (fp?.digest !== rec.fingerprint) {
        log.debug(`layer ${key}: changed since the last build (stat data), hashing it`);
        return undefined;
      }
      return rec.diffId;
    },
    cacheBlobVerified(diffId, stamp) {
      return prior?.cacheBlobs[diffId] === stamp;
    },
    noteCacheBlob(diffId, stamp) {
      cacheBlobs[diffId] = stamp;
    },
    note(key, dir, tar, diffId, fp) {
      if (!fp) return;
      notes.set(key, { dir, record: { ...tar, fingerprint: fp.digest, diffId } });
    },
    async save(path) {
      const layers: Record<string, LayerRecord> = {};
      for (const [key, { dir, record }] of notes) {
        const now = await fingerprintDir(dir, fs);
        if (now?.digest === record.fingerprint) layers[key] = record;
        else log.debug(`layer ${key}: changed after it was hashed; not recorded`);
      }
      await writeLayerState(path, { owner: opts.owner, layers, cacheBlobs });
      return Object.keys(layers).length;
    },
  };
}

function sameOwner(a: LayerState['owner'], b: LayerState['owner']): boolean {
  return a === b || (a !== null && b !== null && a.uid === b.uid && a.gid === b.gid);
}

/**
 * Empty a layers dir except the recorded layer dirs (`<layers>/<escaped bp>/<layer>/`, whole trees), which a
 * later restore keeps or removes. Everything else goes, as when the dir is wiped.
 */
export async function wipeLayersExcept(layersDir: string, keep: ReadonlySet<string>): Promise<void> {
  const byBp = new Map<string, Set<string>>();
  for (const k of keep) {
    const [bp, layer, ...rest] = k.split('/');
    if (!bp || !layer || rest.length > 0) continue;
    const s = byBp.get(bp) ?? new Set<string>();
    s.add(layer);
    byBp.set(bp, s);
  }
  let names: string[];
  try {
    names = await nodeFs.readdir(layersDir);
  } catch (err) {
    if (isNotFound(err)) return;
    throw err;
  }
  for (const name of names) {
    const p = join(layersDir, name);
    const layers = byBp.get(name);
    const st = await nodeFs.lstat(p);
    if (!layers || !st.isDirectory()) {
      await nodeFs.rm(p, { recursive: true, force: true });
      continue;
    }
    for (const child of await nodeFs.readdir(p)) {
      const c = join(p, child);
      if (layers.has(child) && (await nodeFs.lstat(c)).isDirectory()) continue;
      await nodeFs.rm(c, { recursive: true, force: true });
    }
  }
}
