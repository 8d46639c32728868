import type { Stats } from 'node:fs';
import { close as fsClose, constants as fsConstants, open as fsOpen, read as fsRead } from 'node:fs';
import { lstat, open, readdir, readlink, stat } from 'node:fs/promises';
import { isAbsolute, join, relative, resolve, sep } from 'node:path';
import type { Digest } from '../oci/digest.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { checkId, compareEntryNames, mtimeSeconds, prefixComponents } from './paths.js';
import { type LayerCompression, type LayerOutput, writeTarBlob } from './sink.js';
import { MAX_TAR_MTIME, TAR_TRAILER, type TarHeader, encodeTarHeader, tarPadding } from './tar-header.js';

export interface LayerResult {
  /** sha256 of the blob as written (compressed unless `compression: 'none'`). */
  digest: Digest;
  /** Bytes written. */
  size: number;
  /** sha256 of the uncompressed tar. */
  diffId: Digest;
  uncompressedSize: number;
  /** Tar entries written (PAX extended headers not counted). */
  entries: number;
}

/** Something in the source tree that cannot go into a layer and was left out. */
export interface SkippedEntry {
  /** Path relative to the source directory. */
  path: string;
  kind: 'socket' | 'fifo' | 'character-device' | 'block-device' | 'unknown';
  message: string;
}

export interface LayerOptions {
  /** A file path (written to a temp file beside it, then renamed) or a stream (ended when done). */
  out: LayerOutput;
  /** Place entries under this path (e.g. 'workspace', 'layers/my_bp/node'); its parents get entries too. */
  prefix?: string;
  uid?: number;
  gid?: number;
  /** Every entry's mtime. Default 1980-01-01T00:00:01Z; pass SOURCE_DATE_EPOCH or --creation-time. */
  mtime?: Date;
  /** Default 'gzip'. With 'none' the blob is the tar itself and digest equals diffId. */
  compression?: LayerCompression;
  /** Default 1 (see DEFAULT_GZIP_LEVEL). */
  gzipLevel?: number;
  signal?: AbortSignal;
}

export interface WriteLayerOptions extends LayerOptions {
  /** Root of the source tree. Its contents become the layer (the root itself only when `prefix` is set). */
  dir: string;
  /**
   * Keep an entry? `relPath` is '/'-separated and relative to `dir`. Returning false for a directory leaves out
   * its whole subtree.
   */
  filter?: (relPath: string, stats: Stats) => boolean;
  /** Sockets, fifos and device nodes are never written; each one is reported here. */
  onSkip?: (entry: SkippedEntry) => void;
}

/** Mode of the directories a prefix implies (e.g. 'layers' and 'layers/my_bp' for 'layers/my_bp/node'). */
const PREFIX_DIR_MODE = 0o755;
const READ_CHUNK = 1 << 20;
/** Small entries are gathered into writes of about this size; per-chunk stream overhead dominates otherwise. */
const BATCH_BYTES = 256 * 1024;

/**
 * Write a directory tree as a deterministic layer blob in one streaming pass and return its digests.
 *
 * Determinism: entries in `compareEntryNames` order, every mtime set to `mtime`, numeric owner from
 * `uid`/`gid` with blank user/group names, permission bits kept (mode & 0o7777), symlinks stored with their
 * target verbatim, files seen twice through hard links (same device and inode within the tree) stored once and
 * then as hardlink entries to the first name, gzip header without timestamp and with a fixed OS byte. The
 * same tree, or a `cp -a` copy of it anywhere, gives the same bytes.
 */
export async function writeLayer(opts: WriteLayerOptions): Promise<LayerResult> {
  const prefix = prefixComponents(opts.prefix);
  const uid = checkId(opts.uid, 'uid');
  const gid = checkId(opts.gid, 'gid');
  const mtime = mtimeSeconds(opts.mtime, MAX_TAR_MTIME);
  const rootStats = await stat(opts.dir).catch((err: NodeJS.ErrnoException) => {
    throw new PackfarmError('LAYER_SOURCE_MISSING', `layer source ${opts.dir}: ${err.code ?? err.message}`, {
      cause: err,
    });
  });
  if (!rootStats.isDirectory()) {
    throw new PackfarmError('LAYER_SOURCE_MISSING', `layer source ${opts.dir} is not a directory`);
  }
  if (typeof opts.out === 'string') {
    const rel = relative(resolve(opts.dir), resolve(opts.out));
    if (rel !== '' && rel !== '..' && !rel.startsWith(`..${sep}`) && !isAbsolute(rel)) {
      // The blob (and its temp file) would be walked into the layer being written.
      throw new PackfarmError(
        'LAYER_OUTPUT_INSIDE_SOURCE',
        `layer output ${opts.out} is inside the layer source ${opts.dir}`,
        { hint: 'write the layer outside the directory it is made from' },
      );
    }
  }
  const counter = { entries: 0 };
  const digests = await writeTarBlob(
    treeTar({ ...opts, prefix, uid, gid, mtime, rootMode: rootStats.mode, counter }),
    opts,
  );
  return { ...digests, entries: counter.entries };
}

interface TreeContext {
  dir: string;
  prefix: string[];
  uid: number;
  gid: number;
  mtime: number;
  rootMode: number;
  counter: { entries: number };
  filter?: WriteLayerOptions['filter'];
  onSkip?: WriteLayerOptions['onSkip'];
  signal?: AbortSignal;
}

/** Accumulates small buffers into larger chunks; `add` returns a chunk when one is ready to go. */
class Batch {
  private parts: Buffer[] = [];
  private bytes = 0;

  add(b: Buffer): Buffer | undefined {
    if (b.length === 0) return undefined;
    this.parts.push(b);
    this.bytes += b.length;
    return this.bytes >= BATCH_BYTES ? this.take() : undefined;
  }

  take(): Buffer | undefined {
    if (this.bytes === 0) return undefined;
    const out = this.parts.length === 1 ? this.parts[0]! : Buffer.concat(this.parts, this.bytes);
    this.parts = [];
    this.bytes = 0;
    return out;
  }
}

async function* treeTar(ctx: TreeContext): AsyncGenerator<Buffer> {
  const batch = new Batch();
  const header = (h: Omit<TarHeader, 'uid' | 'gid' | 'mtime'>): Buffer | undefined => {
    ctx.counter.entries += 1;
    return batch.add(encodeTarHeader({ ...h, uid: ctx.uid, gid: ctx.gid, mtime: ctx.mtime }));
  };
  const namePrefix = ctx.prefix.length > 0 ? `${ctx.prefix.join('/')}/` : '';
  for (let i = 1; i <= ctx.prefix.length; i++) {
    const last = i === ctx.prefix.length;
    const out = header({
      name: ctx.prefix.slice(0, i).join('/'),
      type: 'dir',
      mode: last ? ctx.rootMode : PREFIX_DIR_MODE,
      size: 0,
    });
    if (out) yield out;
  }

  for await (const e of readAhead(walk(ctx.dir, '', ctx))) {
    const name = namePrefix + e.rel;
    const s = e.stats;
    let out: Buffer | undefined;
    if (s.isDirectory()) {
      out = header({ name, type: 'dir', mode: s.mode, size: 0 });
    } else if (e.target) {
      out = header({ name, type: 'symlink', mode: 0o777, size: 0, linkname: await e.target });
    } else if (e.linkTo !== undefined) {
      out = header({ name, type: 'link', mode: s.mode, size: 0, linkname: namePrefix + e.linkTo });
    } else {
      out = header({ name, type: 'file', mode: s.mode, size: s.size });
      if (out) yield out;
      const chunks = e.content ? [await e.content] : fileChunks(e.abs, s.size);
      for await (const chunk of chunks) {
        if (chunk.length >= BATCH_BYTES) {
          const pending = batch.take();
          if (pending) yield pending;
          yield chunk;
        } else {
          out = batch.add(chunk);
          if (out) yield out;
        }
      }
      out = batch.add(tarPadding(s.size));
    }
    if (out) yield out;
  }
  batch.add(TAR_TRAILER);
  const rest = batch.take();
  if (rest) yield rest;
}

interface Found {
  abs: string;
  rel: string;
  stats: Stats;
}

interface Prepared extends Found {
  /** A symlink's target, being read. */
  target?: Promise<string>;
  /** A small file's whole content, being read. */
  content?: Promise<Buffer>;
  /** For a second name of an already written file: the first name (relative to the source root). */
  linkTo?: string;
}

/** Files up to this size are read whole, ahead of their turn; larger ones are streamed when their turn comes. */
const SMALL_FILE = 256 * 1024;
const LOOKAHEAD_ENTRIES = 32;
const LOOKAHEAD_BYTES = 8 * 1024 * 1024;

/**
 * Start reading small files and symlinks a few entries ahead of the tar writer. With one file at a time, each
 * small file costs three thread-pool round trips (open, read, close) during which nothing else happens; with
 * several in flight the pool overlaps them. Order is kept, and memory is bounded by the window.
 */
async function* readAhead(found: AsyncGenerator<Found>): AsyncGenerator<Prepared> {
  // dev:ino of a file with several links → the path it was first written under.
  const linked = new Map<string, string>();
  const queue: Prepared[] = [];
  let queuedBytes = 0;
  let exhausted = false;
  const prepare = async (f: Found): Promise<Prepared> => {
    const s = f.stats;
    if (s.isSymbolicLink()) return { ...f, target: quiet(readLinkUtf8(f.abs)) };
    if (!s.isFile()) return f;
    if (s.nlink > 1) {
      // Inode numbers above 2^53 lose precision as numbers; ask again as bigint for those.
      const key = Number.isSafeInteger(s.ino) ? `${s.dev}:${s.ino}` : await inodeKey(f.abs);
      const first = linked.get(key);
      if (first !== undefined) return { ...f, linkTo: first };
      linked.set(key, f.rel);
    }
    if (s.size > 0 && s.size <= SMALL_FILE) return { ...f, content: quiet(readSmallFile(f.abs, s.size)) };
    return f;
  };
  try {
    for (;;) {
      while (!exhausted && queue.length < LOOKAHEAD_ENTRIES && queuedBytes < LOOKAHEAD_BYTES) {
        const r = await found.next();
        if (r.done) {
          exhausted = true;
          break;
        }
        const p = await prepare(r.value);
        if (p.content) queuedBytes += p.stats.size;
        queue.push(p);
      }
      const next = queue.shift();
      if (next === undefined) return;
      if (next.content) queuedBytes -= next.stats.size;
      yield next;
    }
  } finally {
    await found.return(undefined);
  }
}

/** Keep a promise that may be dropped unawaited (when writing stops early) from counting as unhandled. */
function quiet<T>(p: Promise<T>): Promise<T> {
  p.catch(() => {});
  return p;
}

const utf8 = new TextDecoder('utf-8', { fatal: true });
/** lstat calls in flight per directory: enough to keep the thread pool busy without a burst of thousands. */
const STAT_BATCH = 64;

/** Depth-first, children sorted bytewise, each directory before its contents (see compareEntryNames). */
async function* walk(abs: string, rel: string, ctx: TreeContext): AsyncGenerator<Found> {
  ctx.signal?.throwIfAborted();
  const raw = await readdir(abs, { encoding: 'buffer' }).catch((err: unknown) => {
    throw sourceError(abs, 'cannot list directory', err);
  });
  raw.sort(Buffer.compare);
  for (let i = 0; i < raw.length; i += STAT_BATCH) {
    const names = raw.slice(i, i + STAT_BATCH).map((n) => decodeName(n, abs));
    const stats = await Promise.all(
      names.map((n) =>
        lstat(join(abs, n)).catch((err: unknown) => {
          throw sourceError(join(abs, n), 'cannot stat', err);
        }),
      ),
    );
    for (let j = 0; j < names.length; j++) {
      const childAbs = join(abs, names[j]!);
      const childRel = rel === '' ? names[j]! : `${rel}/${names[j]}`;
      const s = stats[j]!;
      if (ctx.filter && !ctx.filter(childRel, s)) continue;
      if (s.isDirectory()) {
        yield { abs: childAbs, rel: childRel, stats: s };
        yield* walk(childAbs, childRel, ctx);
      } else if (s.isFile() || s.isSymbolicLink()) {
        yield { abs: childAbs, rel: childRel, stats: s };
      } else {
        const kind = s.isSocket()
          ? 'socket'
          : s.isFIFO()
            ? 'fifo'
            : s.isCharacterDevice()
              ? 'character-device'
              : s.isBlockDevice()
                ? 'block-device'
                : 'unknown';
        ctx.onSkip?.({ path: childRel, kind, message: `${childAbs}: ${kind} left out of the layer` });
      }
    }
  }
}

function decodeName(raw: Buffer, dir: string): string {
  try {
    return utf8.decode(raw);
  } catch {
    throw new PackfarmError(
      'LAYER_SOURCE_NAME',
      `${join(dir, raw.toString('latin1'))}: file name is not valid UTF-8; layer entry names must be UTF-8`,
      { hint: 'rename the file (e.g. with convmv) or exclude it' },
    );
  }
}

async function readLinkUtf8(abs: string): Promise<string> {
  const raw = await readlink(abs, { encoding: 'buffer' }).catch((err: unknown) => {
    throw sourceError(abs, 'cannot read symlink', err);
  });
  try {
    return utf8.decode(raw);
  } catch {
    throw new PackfarmError('LAYER_SOURCE_NAME', `${abs}: symlink target is not valid UTF-8`);
  }
}

async function inodeKey(abs: string): Promise<string> {
  // bigint: inode numbers on some filesystems exceed 2^53.
  const s = await lstat(abs, { bigint: true });
  return `${s.dev}:${s.ino}`;
}

async function openSource(abs: string) {
  return open(abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW).catch((err: unknown) => {
    throw sourceError(abs, 'cannot open', err);
  });
}

function shrank(abs: string, size: number): PackfarmError {
  return new PackfarmError(
    'LAYER_SOURCE_CHANGED',
    `${abs}: file shrank from ${size} bytes while it was being read`,
    {
      hint: 'do not modify the layer source while the layer is written',
    },
  );
}

/**
 * A whole small file, exactly `size` bytes (the size its tar header announces). Callback fs calls wrapped in a
 * single promise: for thousands of small files this costs about half of what three FileHandle calls do.
 */
function readSmallFile(abs: string, size: number): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    fsOpen(abs, fsConstants.O_RDONLY | fsConstants.O_NOFOLLOW, (openErr, fd) => {
      if (openErr) return reject(sourceError(abs, 'cannot open', openErr));
      const buf = Buffer.allocUnsafe(size);
      const finish = (err: unknown) => {
        fsClose(fd, (closeErr) => {
          const failure = err ?? closeErr;
          if (failure) reject(sourceError(abs, 'cannot read', failure));
          else resolve(buf);
        });
      };
      const readFrom = (got: number) => {
        fsRead(fd, buf, got, size - got, null, (readErr, bytesRead) => {
          if (readErr) return finish(readErr);
          if (bytesRead === 0) return finish(shrank(abs, size));
          if (got + bytesRead < size) return readFrom(got + bytesRead);
          finish(undefined);
        });
      };
      readFrom(0);
    });
  });
}

/** Exactly `size` bytes of a file, read in chunks; a file that shrank meanwhile is an error, not a short entry. */
async function* fileChunks(abs: string, size: number): AsyncGenerator<Buffer> {
  if (size === 0) return;
  const fh = await openSource(abs);
  try {
    let remaining = size;
    while (remaining > 0) {
      const buf = Buffer.allocUnsafe(Math.min(remaining, READ_CHUNK));
      const { bytesRead } = await fh.read(buf, 0, buf.length, null).catch((err: unknown) => {
        throw sourceError(abs, 'cannot read', err);
      });
      if (bytesRead === 0) throw shrank(abs, size);
      remaining -= bytesRead;
      yield bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
  } finally {
    await fh.close();
  }
}

function sourceError(path: string, what: string, err: unknown): unknown {
  if (isPackfarmError(err)) return err;
  const e = err as NodeJS.ErrnoException;
  return new PackfarmError('LAYER_SOURCE_UNREADABLE', `${path}: ${what}: ${e.code ?? e.message}`, {
    cause: err,
  });
}

/**
 * An entry of a layer described entry by entry (config files, launcher links, small generated layers, or a
 * root filesystem assembled from packages whose file bytes wait on disk).
 */
export interface MemoryEntry {
  /** '/'-separated path inside the layer (after `prefix`); leading '/' and './' are ignored. */
  path: string;
  /** 'link' is a hard link to another entry of this layer, a regular file that sorts before it. */
  type: 'file' | 'dir' | 'symlink' | 'link';
  /** Permission bits (setuid/setgid/sticky kept); default 0644 for files, 0755 for directories. */
  mode?: number;
  content?: Buffer | string;
  /**
   * A file's bytes read from disk when the entry is written (streamed, never held whole): exactly `size` bytes
   * of `path`. Used instead of `content`.
   */
  source?: { path: string; size: number };
  /** Symlink target, kept verbatim; for 'link', the path (inside the layer, before `prefix`) of the file. */
  linkname?: string;
  /** Per-entry owner, overriding the layer's uid/gid. */
  uid?: number;
  gid?: number;
}

/**
 * Write a layer from entries held in memory, with the same order and determinism as `writeLayer` (the input
 * order does not matter). Missing parent directories are added (mode 0755); a path given twice is an error.
 */
export async function writeLayerFromEntries(
  entries: readonly MemoryEntry[],
  opts: LayerOptions,
): Promise<LayerResult> {
  const prefix = prefixComponents(opts.prefix);
  const uid = checkId(opts.uid, 'uid');
  const gid = checkId(opts.gid, 'gid');
  const mtime = mtimeSeconds(opts.mtime, MAX_TAR_MTIME);

  const byName = new Map<string, TarHeader & { content?: Buffer; source?: string }>();
  // Directories added only because something lies below them; an explicit entry may take their place.
  const implied = new Set<string>();
  const addDir = (name: string, below: string) => {
    const existing = byName.get(name);
    if (existing === undefined) {
      byName.set(name, { name, type: 'dir', mode: 0o755, uid, gid, size: 0, mtime });
      implied.add(name);
    } else if (existing.type !== 'dir') {
      throw new PackfarmError(
        'INVALID_LAYER_ENTRY',
        `layer entry "${below}" lies below "${name}", which is not a directory`,
      );
    }
  };
  for (let i = 1; i <= prefix.length; i++) addDir(prefix.slice(0, i).join('/'), prefix.join('/'));
  for (const e of entries) {
    const parts = memoryPathComponents(e.path);
    const name = [...prefix, ...parts].join('/');
    for (let i = 1; i < parts.length; i++) addDir([...prefix, ...parts.slice(0, i)].join('/'), e.path);
    if (byName.has(name)) {
      if (!implied.has(name))
        throw new PackfarmError('INVALID_LAYER_ENTRY', `layer entry "${e.path}" is given twice`);
      if (e.type !== 'dir') {
        throw new PackfarmError(
          'INVALID_LAYER_ENTRY',
          `layer entry "${e.path}" is a ${e.type} but other entries lie below it`,
        );
      }
      implied.delete(name);
    }
    const entryUid = checkId(e.uid ?? uid, 'uid');
    const entryGid = checkId(e.gid ?? gid, 'gid');
    if (e.type === 'file' && e.source) {
      if (!Number.isSafeInteger(e.source.size) || e.source.size < 0)
        throw new PackfarmError('INVALID_LAYER_ENTRY', `layer entry "${e.path}": invalid source size`);
      byName.set(name, {
        name,
        type: 'file',
        mode: e.mode ?? 0o644,
        uid: entryUid,
        gid: entryGid,
        size: e.source.size,
        mtime,
        source: e.source.path,
      });
    } else if (e.type === 'file') {
      const content =
        typeof e.content === 'string' ? Buffer.from(e.content, 'utf8') : (e.content ?? Buffer.alloc(0));
      byName.set(name, {
        name,
        type: 'file',
        mode: e.mode ?? 0o644,
        uid: entryUid,
        gid: entryGid,
        size: content.length,
        mtime,
        content,
      });
    } else if (e.type === 'link') {
      if (e.linkname === undefined || e.linkname === '') {
        throw new PackfarmError(
          'INVALID_LAYER_ENTRY',
          `layer entry "${e.path}": a hard link needs a linkname`,
        );
      }
      byName.set(name, {
        name,
        type: 'link',
        mode: e.mode ?? 0o644,
        uid: entryUid,
        gid: entryGid,
        size: 0,
        mtime,
        linkname: [...prefix, ...memoryPathComponents(e.linkname)].join('/'),
      });
    } else if (e.type === 'symlink') {
      if (e.linkname === undefined || e.linkname === '') {
        throw new PackfarmError('INVALID_LAYER_ENTRY', `layer entry "${e.path}": a symlink needs a linkname`);
      }
      byName.set(name, {
        name,
        type: 'symlink',
        mode: 0o777,
        uid: entryUid,
        gid: entryGid,
        size: 0,
        mtime,
        linkname: e.linkname,
      });
    } else {
      byName.set(name, {
        name,
        type: 'dir',
        mode: e.mode ?? 0o755,
        uid: entryUid,
        gid: entryGid,
        size: 0,
        mtime,
      });
    }
  }
  const sorted = [...byName.values()].sort((a, b) => compareEntryNames(a.name, b.name));
  for (const h of sorted) {
    if (h.type !== 'link') continue;
    // A reader creates the link from the file it already unpacked: the file must be in the layer, and first.
    const target = byName.get(h.linkname ?? '');
    if (target?.type !== 'file' || compareEntryNames(target.name, h.name) >= 0)
      throw new PackfarmError(
        'INVALID_LAYER_ENTRY',
        `layer entry "${h.name}": a hard link must name a regular file of the layer that sorts before it (got "${h.linkname}")`,
      );
  }
  async function* tarOf(): AsyncGenerator<Buffer> {
    for (const h of sorted) {
      yield encodeTarHeader(h);
      if (h.source !== undefined) {
        if (h.size > 0) {
          yield* fileChunks(h.source, h.size);
          yield tarPadding(h.size);
        }
      } else if (h.content && h.content.length > 0) {
        yield h.content;
        yield tarPadding(h.content.length);
      }
    }
    yield TAR_TRAILER;
  }
  const digests = await writeTarBlob(tarOf(), opts);
  return { ...digests, entries: sorted.length };
}

function memoryPathComponents(path: string): string[] {
  const parts = path.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.length === 0 || parts.some((p) => p === '..' || p.includes('\0'))) {
    throw new PackfarmError(
      'INVALID_LAYER_ENTRY',
      `layer entry "${path}" must name something below the layer root, without ".." or NUL`,
    );
  }
  return parts;
}
