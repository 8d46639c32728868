import { execFile } from 'node:child_process';
import { constants as fsConstants } from 'node:fs';
import type { Stats } from 'node:fs';
import {
  lchown,
  link,
  lstat,
  lutimes,
  mkdir,
  open,
  readdir,
  readlink,
  realpath,
  rm,
  symlink,
  unlink,
} from 'node:fs/promises';
import type { FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { promisify } from 'node:util';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import type { Header } from 'tar-stream';
import { type Digest, createDigester } from '../oci/digest.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';

/**
 * How a symlink met while resolving an entry's *parent* directories is treated.
 * - 'refuse' (default): the entry is refused. Nothing is ever written through a symlink.
 * - 'within-root': the symlink is followed as if `dest` were the root directory (absolute targets start at
 *   `dest`, `..` stops at `dest`), the way a container runtime unpacks a root filesystem whose `/lib` is a
 *   link to `usr/lib`. Paths still never leave `dest`.
 */
export type ParentSymlinkPolicy = 'refuse' | 'within-root';

export interface ExtractEntryInfo {
  /** Entry name as normalised ('/'-separated, relative to dest). */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'link' | 'device' | 'fifo' | 'whiteout' | 'opaque';
  size: number;
}

export interface ExtractLayerOptions {
  /** The layer blob: gzip-compressed or plain tar (detected from the first bytes). */
  source: NodeJS.ReadableStream | AsyncIterable<Uint8Array>;
  /** Directory to unpack into; created when missing. Several layers are applied by calling this in order. */
  dest: string;
  /** Create character/block devices and fifos (needs root; uses mknod(1)). Refused otherwise. */
  allowDevices?: boolean;
  /** chown entries to the uid/gid in the tar. Only honoured when running as root. */
  preserveOwner?: boolean;
  parentSymlinks?: ParentSymlinkPolicy;
  /** Names the layer in error messages, e.g. 'layer sha256:ab…'. */
  name?: string;
  onEntry?: (info: ExtractEntryInfo) => void;
  signal?: AbortSignal;
}

export interface ExtractResult {
  /** Digest and size of the bytes read from `source`. */
  digest: Digest;
  size: number;
  /** Digest and size of the tar after decompression: the layer's diffID. */
  diffId: Digest;
  uncompressedSize: number;
  /** Entries applied (whiteouts included). */
  entries: number;
}

const WHITEOUT_PREFIX = '.wh.';
const OPAQUE_MARKER = '.wh..wh..opq';
/** Symlinks followed while resolving one path (Linux's own limit). */
const MAX_SYMLINK_HOPS = 40;

/**
 * Unpack one layer onto `dest`, applying OCI whiteouts against what earlier layers left there.
 *
 * Safety: an entry is refused (UNSAFE_LAYER_ENTRY) when its name has a `..` component, when writing it would
 * pass through a symlink (see `parentSymlinks`), when it is a hardlink to something that is not already inside
 * `dest`, or when it is a device or fifo and `allowDevices` is off. Leading '/' and './' are stripped, as tar
 * and container runtimes do. Existing entries are replaced, never written through: files are created with
 * O_EXCL|O_NOFOLLOW after the old entry is removed. Symlinks are created verbatim and never followed.
 * `dest` must not be modified by others during extraction.
 */
export async function extractLayer(opts: ExtractLayerOptions): Promise<ExtractResult> {
  await mkdir(opts.dest, { recursive: true });
  const root = await realpath(opts.dest);
  const state: ExtractState = {
    root,
    opts,
    label: opts.name ?? 'layer',
    policy: opts.parentSymlinks ?? 'refuse',
    chown: opts.preserveOwner === true && process.getuid?.() === 0,
    touched: new Set(['']),
    dirs: [],
    entries: 0,
  };

  const compressed = createDigester();
  const plain = createDigester();
  const { head, rest, release } = await peek(opts.source, 6);
  let format: 'gzip' | 'tar';
  try {
    format = sniff(head, state.label);
  } catch (err) {
    await release(); // stops (and, for a stream, destroys) the source
    throw err;
  }

  const stages: Array<NodeJS.ReadableStream | NodeJS.WritableStream | NodeJS.ReadWriteStream> = [
    rest,
    tap((c) => compressed.update(c)),
  ];
  if (format === 'gzip')
    stages.push(
      createGunzip({ chunkSize: 64 * 1024 }),
      tap((c) => plain.update(c)),
    );

  const extractor = tar.extract();
  extractor.on('entry', (header, stream, next) => {
    // The entry's stream is destroyed with the same error when the archive ends early; that error reaches
    // us through the pipeline, not as an unheard event.
    stream.on('error', () => {});
    // streamx Readables are async-iterable at run time; their typings omit it.
    applyEntry(state, header, stream as unknown as EntryStream).then(
      () => next(),
      (err: unknown) => {
        stream.resume();
        next(err as Error);
      },
    );
  });
  stages.push(extractor);

  try {
    // biome-ignore lint/suspicious/noExplicitAny: pipeline's variadic overloads do not accept a spread array
    await (pipeline as any)(...stages, opts.signal ? { signal: opts.signal } : {});
  } catch (err) {
    if (isPackfarmError(err) || (err as Error).name === 'AbortError') throw err;
    throw new PackfarmError(
      'INVALID_LAYER',
      `${state.label}: cannot read the layer: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  await finishDirectories(state);
  const digest = compressed.digest();
  return {
    digest,
    size: compressed.size(),
    diffId: format === 'gzip' ? plain.digest() : digest,
    uncompressedSize: format === 'gzip' ? plain.size() : compressed.size(),
    entries: state.entries,
  };
}

interface ExtractState {
  root: string;
  opts: ExtractLayerOptions;
  label: string;
  policy: ParentSymlinkPolicy;
  chown: boolean;
  /** Paths (relative to root, resolved) written by this layer, and their ancestors: whiteouts spare them. */
  touched: Set<string>;
  /** Directories whose mode and mtime are set at the end (writing their contents would change the mtime). */
  dirs: Array<{ rel: string; mode: number; mtime: Date; uid: number; gid: number }>;
  entries: number;
}

async function peek(
  source: NodeJS.ReadableStream | AsyncIterable<Uint8Array>,
  bytes: number,
): Promise<{ head: Buffer; rest: Readable; release: () => Promise<unknown> }> {
  const it = (source as AsyncIterable<Uint8Array>)[Symbol.asyncIterator]();
  const chunks: Buffer[] = [];
  let have = 0;
  let done = false;
  while (have < bytes) {
    const r = await it.next();
    if (r.done) {
      done = true;
      break;
    }
    const chunk = Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array);
    chunks.push(chunk);
    have += chunk.length;
  }
  const head = Buffer.concat(chunks);
  async function* replay(): AsyncGenerator<Buffer> {
    try {
      if (head.length > 0) yield head;
      while (!done) {
        const r = await it.next();
        if (r.done) return;
        yield Buffer.isBuffer(r.value) ? r.value : Buffer.from(r.value as Uint8Array);
      }
    } finally {
      // Stops (and, for a stream, destroys) the source when extraction ends early.
      await it.return?.();
    }
  }
  return {
    head,
    rest: Readable.from(replay(), { objectMode: false }),
    release: async () => it.return?.(),
  };
}

function sniff(head: Buffer, label: string): 'gzip' | 'tar' {
  const starts = (...bytes: number[]) => bytes.every((b, i) => head[i] === b);
  if (starts(0x1f, 0x8b)) return 'gzip';
  const unsupported = (what: string) =>
    new PackfarmError(
      'UNSUPPORTED_LAYER_COMPRESSION',
      `${label}: ${what}-compressed layers are not supported`,
      {
        hint: 'packfarm reads gzip-compressed and uncompressed tar layers',
      },
    );
  if (starts(0x28, 0xb5, 0x2f, 0xfd)) throw unsupported('zstd');
  if (starts(0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00)) throw unsupported('xz');
  if (starts(0x42, 0x5a, 0x68)) throw unsupported('bzip2');
  if (head.length === 0) throw new PackfarmError('INVALID_LAYER', `${label}: the layer is empty (0 bytes)`);
  return 'tar';
}

function tap(fn: (chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      fn(chunk);
      callback(null, chunk);
    },
  });
}

function unsafe(state: ExtractState, entry: string, why: string): PackfarmError {
  return new PackfarmError('UNSAFE_LAYER_ENTRY', `${state.label}: entry "${entry}" refused: ${why}`, {
    hint: 'the layer may be malicious or corrupt; nothing was written outside the destination',
  });
}

/**
 * Split a tar name into components, dropping a leading '/' and '.' parts; `..` anywhere is refused. `entry`
 * names the entry in errors (for a hardlink, `raw` is its target).
 */
function components(state: ExtractState, raw: string, entry = raw, what = 'its name'): string[] {
  if (raw.includes('\0')) throw unsafe(state, entry, `${what} contains a NUL byte`);
  const parts = raw.split('/').filter((p) => p !== '' && p !== '.');
  if (parts.includes('..')) {
    throw unsafe(state, entry, `${what} has a ".." component (it would leave the destination)`);
  }
  return parts;
}

type EntryType = ExtractEntryInfo['type'];
/** An entry's content as tar-stream hands it over (a streamx Readable). */
type EntryStream = AsyncIterable<Buffer> & { resume(): unknown };

async function applyEntry(state: ExtractState, header: Header, stream: EntryStream): Promise<void> {
  try {
    await applyEntryUnchecked(state, header, stream);
  } catch (err) {
    if (isPackfarmError(err) || (err as Error).name === 'AbortError') throw err;
    throw new PackfarmError(
      'LAYER_EXTRACT_FAILED',
      `${state.label}: entry "${header.name}": ${(err as Error).message}`,
      { cause: err },
    );
  }
}

function entryKind(state: ExtractState, header: Header): EntryType {
  switch (header.type) {
    case 'file':
    case 'contiguous-file':
      return 'file';
    case 'directory':
      return 'dir';
    case 'symlink':
      return 'symlink';
    case 'link':
      return 'link';
    case 'character-device':
    case 'block-device':
      return 'device';
    case 'fifo':
      return 'fifo';
    default:
      throw new PackfarmError(
        'UNSUPPORTED_LAYER_ENTRY',
        `${state.label}: entry "${header.name}" has an unsupported tar type (${String(header.type)})`,
      );
  }
}

async function applyEntryUnchecked(state: ExtractState, header: Header, stream: EntryStream): Promise<void> {
  state.opts.signal?.throwIfAborted();
  const rawName = header.name;
  const parts = components(state, rawName);
  const base = parts.at(-1);

  if (base?.startsWith(WHITEOUT_PREFIX)) {
    stream.resume();
    await applyWhiteout(state, rawName, parts);
    return;
  }
  const kind = entryKind(state, header);
  if ((kind === 'device' || kind === 'fifo') && !state.opts.allowDevices) {
    throw unsafe(state, rawName, `it is a ${header.type} node; device and fifo nodes need allowDevices`);
  }
  if (base === undefined) {
    // The layer's root ('./'): dest itself, whose mode and owner are left alone.
    if (kind !== 'dir') throw unsafe(state, rawName, `a ${kind} entry cannot replace the destination itself`);
    stream.resume();
    state.entries += 1;
    return;
  }
  state.entries += 1;
  state.opts.onEntry?.({ path: parts.join('/'), type: kind, size: header.size ?? 0 });

  const parentRel = await resolveParent(state, rawName, parts.slice(0, -1), true);
  const rel = parentRel === '' ? base : `${parentRel}/${base}`;
  const abs = join(state.root, rel);
  const mode = (header.mode ?? (kind === 'dir' ? 0o755 : 0o644)) & 0o7777;
  const mtime = header.mtime ?? new Date(0);
  const uid = header.uid ?? 0;
  const gid = header.gid ?? 0;
  // Checked before anything at `abs` is removed, so a refused hardlink destroys nothing.
  const linkTarget = kind === 'link' ? await hardlinkTarget(state, rawName, header, rel) : undefined;
  markTouched(state, rel);

  const existing = await lstatOrNull(abs);
  if (kind === 'dir') {
    if (existing && !existing.isDirectory()) await unlink(abs);
    // Owner-writable while the layer is applied; the real mode is set at the end.
    if (!existing?.isDirectory()) await mkdir(abs, { mode: mode | 0o700 });
    if (state.chown) await lchown(abs, uid, gid);
    state.dirs.push({ rel, mode, mtime, uid, gid });
    stream.resume();
    return;
  }
  // Replace, never write through: whatever is there (a symlink above all) goes first.
  if (existing) await rm(abs, { recursive: existing.isDirectory(), force: true });

  switch (kind) {
    case 'file': {
      const fh = await open(
        abs,
        fsConstants.O_WRONLY | fsConstants.O_CREAT | fsConstants.O_EXCL | fsConstants.O_NOFOLLOW,
        0o600,
      );
      try {
        for await (const chunk of stream) await writeAll(fh, chunk);
        await finishFile(state, fh, mode, mtime, uid, gid);
      } finally {
        await fh.close();
      }
      return;
    }
    case 'symlink':
      stream.resume();
      await symlink(header.linkname ?? '', abs);
      if (state.chown) await lchown(abs, uid, gid);
      await lutimes(abs, mtime, mtime);
      return;
    case 'link':
      stream.resume();
      await link(join(state.root, linkTarget!), abs);
      return;
    default:
      stream.resume();
      await makeNode(abs, kind === 'fifo' ? 'p' : header.type === 'block-device' ? 'b' : 'c', mode, header);
      if (state.chown) await lchown(abs, uid, gid);
  }
}

/** The resolved path (relative to root) of an existing, non-directory hardlink target inside root. */
async function hardlinkTarget(
  state: ExtractState,
  rawName: string,
  header: Header,
  rel: string,
): Promise<string> {
  const parts = components(state, header.linkname ?? '', rawName, 'its hardlink target');
  const base = parts.at(-1);
  if (base === undefined) throw unsafe(state, rawName, 'its hardlink target is the destination itself');
  const parent = await resolveParent(state, rawName, parts.slice(0, -1), false);
  const targetRel = parent === undefined ? undefined : parent === '' ? base : `${parent}/${base}`;
  const stats = targetRel === undefined ? null : await lstatOrNull(join(state.root, targetRel));
  if (targetRel === undefined || stats === null) {
    throw unsafe(
      state,
      rawName,
      `its hardlink target "${header.linkname}" does not exist in the destination (a hardlink may only point to an entry extracted before it)`,
    );
  }
  if (stats.isDirectory())
    throw unsafe(state, rawName, `its hardlink target "${header.linkname}" is a directory`);
  if (targetRel === rel) throw unsafe(state, rawName, 'it is a hardlink to itself');
  return targetRel;
}

async function finishFile(
  state: ExtractState,
  fh: FileHandle,
  mode: number,
  mtime: Date,
  uid: number,
  gid: number,
): Promise<void> {
  // chown before chmod: chown clears setuid/setgid bits.
  if (state.chown) await fh.chown(uid, gid);
  await fh.chmod(mode);
  await fh.utimes(mtime, mtime);
}

async function writeAll(fh: FileHandle, chunk: Buffer): Promise<void> {
  let off = 0;
  while (off < chunk.length) {
    const { bytesWritten } = await fh.write(chunk, off, chunk.length - off);
    off += bytesWritten;
  }
}

async function makeNode(abs: string, kind: 'p' | 'b' | 'c', mode: number, header: Header): Promise<void> {
  const args = ['-m', (mode & 0o7777).toString(8), abs, kind];
  if (kind !== 'p') args.push(String(header.devmajor ?? 0), String(header.devminor ?? 0));
  try {
    await promisify(execFile)('mknod', args);
  } catch (err) {
    throw new PackfarmError(
      'LAYER_EXTRACT_FAILED',
      `cannot create ${abs}: mknod failed: ${(err as Error).message}`,
      {
        cause: err,
        hint: 'device nodes can only be created as root',
      },
    );
  }
}

async function lstatOrNull(abs: string): Promise<Stats | null> {
  try {
    return await lstat(abs);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
}

function markTouched(state: ExtractState, rel: string): void {
  let p = rel;
  while (!state.touched.has(p)) {
    state.touched.add(p);
    const i = p.lastIndexOf('/');
    p = i === -1 ? '' : p.slice(0, i);
  }
}

/**
 * Resolve parent components to a path relative to root in which every component is a real directory (never a
 * symlink), so that joining it to root cannot lead outside. Missing directories are created when `create`;
 * otherwise undefined is returned for a missing one.
 */
async function resolveParent(
  state: ExtractState,
  entry: string,
  parts: string[],
  create: boolean,
): Promise<string | undefined> {
  const resolved: string[] = [];
  const queue = [...parts];
  let hops = 0;
  while (queue.length > 0) {
    const c = queue.shift()!;
    if (c === '' || c === '.') continue;
    if (c === '..') {
      // Only symlink targets bring '..' here (names with '..' were refused); at the root it stays at the root.
      resolved.pop();
      continue;
    }
    const abs = join(state.root, ...resolved, c);
    const s = await lstatOrNull(abs);
    if (s === null) {
      if (!create) return undefined;
      await mkdir(abs, { mode: 0o755 });
      resolved.push(c);
      continue;
    }
    if (s.isDirectory()) {
      resolved.push(c);
      continue;
    }
    if (s.isSymbolicLink()) {
      const where = [...resolved, c].join('/');
      if (state.policy === 'refuse') {
        throw unsafe(state, entry, `its parent "${where}" is a symlink; writing through symlinks is refused`);
      }
      hops += 1;
      if (hops > MAX_SYMLINK_HOPS) throw unsafe(state, entry, `too many levels of symlinks at "${where}"`);
      const target = await readlink(abs);
      if (target.startsWith('/')) resolved.length = 0;
      queue.unshift(...target.split('/'));
      continue;
    }
    throw new PackfarmError(
      'LAYER_EXTRACT_CONFLICT',
      `${state.label}: entry "${entry}": "${[...resolved, c].join('/')}" exists and is not a directory`,
    );
  }
  return resolved.join('/');
}

async function applyWhiteout(state: ExtractState, rawName: string, parts: string[]): Promise<void> {
  state.entries += 1;
  const base = parts.at(-1)!;
  const opaque = base === OPAQUE_MARKER;
  const hidden = opaque ? '' : base.slice(WHITEOUT_PREFIX.length);
  if (!opaque) {
    if (hidden === '' || hidden === '.' || hidden === '..' || hidden.startsWith(WHITEOUT_PREFIX)) {
      // '.wh..wh.*' names other than the opaque marker are AUFS metadata with nothing to apply.
      if (hidden.startsWith(WHITEOUT_PREFIX)) return;
      throw unsafe(state, rawName, `whiteout for "${hidden}" does not name an entry`);
    }
  }
  state.opts.onEntry?.({ path: parts.join('/'), type: opaque ? 'opaque' : 'whiteout', size: 0 });
  const parentRel = await resolveParent(state, rawName, parts.slice(0, -1), false);
  if (parentRel === undefined) return;
  if (opaque) {
    const dirAbs = parentRel === '' ? state.root : join(state.root, parentRel);
    const s = await lstatOrNull(dirAbs);
    if (!s?.isDirectory()) return;
    for (const child of await readdir(dirAbs)) {
      await removeLower(state, parentRel === '' ? child : `${parentRel}/${child}`);
    }
    return;
  }
  await removeLower(state, parentRel === '' ? hidden : `${parentRel}/${hidden}`);
}

/**
 * Remove what lower layers left at `rel`, keeping whatever this layer itself wrote there (the spec: a whiteout
 * applies to lower layers only, wherever it sits in the tar's order).
 */
async function removeLower(state: ExtractState, rel: string): Promise<void> {
  const abs = join(state.root, rel);
  if (!state.touched.has(rel)) {
    await rm(abs, { recursive: true, force: true });
    return;
  }
  const s = await lstatOrNull(abs);
  if (!s?.isDirectory()) return;
  for (const child of await readdir(abs)) await removeLower(state, `${rel}/${child}`);
}

/** Set directory modes and mtimes deepest first, through a descriptor opened without following symlinks. */
async function finishDirectories(state: ExtractState): Promise<void> {
  const depth = (rel: string) => rel.split('/').length;
  const dirs = [...state.dirs].sort((a, b) => depth(b.rel) - depth(a.rel));
  for (const d of dirs) {
    // A later entry may have replaced a component with a symlink; such a directory is gone from the result.
    if (!(await isRealDirectoryPath(state.root, d.rel))) continue;
    let fh: FileHandle;
    try {
      fh = await open(
        join(state.root, d.rel),
        fsConstants.O_RDONLY | fsConstants.O_DIRECTORY | fsConstants.O_NOFOLLOW,
      );
    } catch {
      continue;
    }
    try {
      if (state.chown) await fh.chown(d.uid, d.gid);
      await fh.chmod(d.mode);
      await fh.utimes(d.mtime, d.mtime);
    } finally {
      await fh.close();
    }
  }
}

/** Every component of `rel` below `root` is a directory, none a symlink. */
async function isRealDirectoryPath(root: string, rel: string): Promise<boolean> {
  let abs = root;
  for (const part of rel.split('/')) {
    abs = join(abs, part);
    const s = await lstatOrNull(abs);
    if (!s?.isDirectory()) return false;
  }
  return true;
}
