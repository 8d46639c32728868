import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join, resolve as resolvePath } from 'node:path';
import { Readable, Transform, type TransformCallback, pipeline as streamPipeline } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { z } from 'zod';
import {
  type Digest,
  digestAlgorithm,
  digestHex,
  isDigest,
  parseDigest,
  sha256Digest,
} from '../oci/digest.js';
import { MediaType, isIndexMediaType } from '../oci/media-types.js';
import {
  type Descriptor,
  type ImageIndex,
  ImageIndexSchema,
  ImageManifestSchema,
  MediaTypeProbeSchema,
} from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { canonicalJson } from '../util/json.js';
import { parseJson, parseWith } from '../util/validate.js';
import { type LockOptions, withFileLock } from '../util/lock.js';
import { processAlive } from '../util/process.js';
import { makeTempDir, sweepDeadTemps, sweepOldEntries, tempFileName } from '../util/tempdir.js';
import type { ImageStore, PutBlobInput, PutBlobResult, StoredManifest } from './store.js';

/**
 * An OCI image layout directory as an ImageStore (image-spec image-layout.md):
 *   oci-layout            {"imageLayoutVersion":"1.0.0"}
 *   index.json            an OCI index; entries with org.opencontainers.image.ref.name are the tags
 *   blobs/<alg>/<hex>     every blob, manifests included
 *
 * Policy for index.json (what other tools see when they list the layout):
 * - putManifest with a tag replaces any older entry of that tag.
 * - putManifest without a tag adds an *untagged* entry (no ref.name) unless the digest is already listed, so
 *   a manifest pushed by digest stays reachable for tools that garbage-collect from index.json (umoci gc).
 * - Putting an index removes the untagged entries of its direct children: once the parent is there they are
 *   reachable through it. The usual order (children by digest, then the index by tag) therefore leaves one
 *   tagged entry, which is what skopeo and umoci expect.
 * - Entries are kept sorted (tagged by name, then untagged by digest) so the file does not depend on the order
 *   in which concurrent writers finished.
 *
 * Every read-modify-write of index.json holds an exclusive lock file (`.packfarm-index.lock`, see lock.ts),
 * so several processes can write tags into one layout at once; the file itself is replaced atomically.
 * Blobs are streamed to a temp file beside their final name, digest-checked, then renamed; a blob that
 * already exists is not written again.
 */
export interface LayoutStore extends ImageStore {
  readonly kind: 'layout';
  /** Absolute path of the layout directory. */
  readonly dir: string;
  /** The descriptors listed in index.json, as stored. */
  entries(): Promise<Descriptor[]>;
  /** Drop a tag from index.json (blobs stay). Returns whether the tag existed. */
  removeTag(tag: string): Promise<boolean>;
  /** Where a blob lives on disk (whether or not it exists). */
  blobPath(digest: Digest): string;
  /**
   * A fresh scratch dir inside the layout (same filesystem as blobs/, so finished files are renamed into
   * place), under `.packfarm-tmp/`, never under blobs/ where tools such as `umoci gc` expect only blobs.
   */
  makeTempDir(kind: string): Promise<string>;
}

export interface OpenLayoutOptions {
  /** Create the layout when the directory is missing or empty (default false: it must exist). */
  create?: boolean;
  lock?: LockOptions;
}

export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
export const LAYOUT_VERSION = '1.0.0';
/** Registries cap manifests at 4 MiB; so do we, so a layer digest is never slurped as a manifest. */
const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
const LOCK_FILE = '.packfarm-index.lock';
/** Uploads in progress and exporters' scratch dirs; what dead processes left here is swept on open. */
const TEMP_DIR = '.packfarm-tmp';
/** Upload temp files older packfarm versions wrote inside blobs/<alg>/ (they break `umoci gc`). */
const LEGACY_UPLOAD = /^\.upload\.(\d+)\.[0-9a-f]+\.tmp$/;

const OciLayoutSchema = z.looseObject({
  imageLayoutVersion: z.string().regex(/^1\.\d+\.\d+$/, 'expected a 1.x.y layout version such as "1.0.0"'),
});

// image-layout.md: ref := component ("/" component)*; component := alphanum (separator alphanum)*.
const REF_NAME_RE =
  /^[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*(?:\/[A-Za-z0-9]+(?:(?:[-._:@+]|--)[A-Za-z0-9]+)*)*$/;

export function isValidRefName(name: string): boolean {
  return name.length <= 255 && REF_NAME_RE.test(name);
}

/** What every step of a layout store needs: its paths, its name in messages and how it locks index.json. */
interface LayoutCtx {
  dir: string;
  layoutFile: string;
  indexFile: string;
  description: string;
  underLock: <T>(fn: () => Promise<T>) => Promise<T>;
  blobPath: (digest: Digest) => string;
}

export async function openLayoutStore(dirPath: string, opts: OpenLayoutOptions = {}): Promise<LayoutStore> {
  const ctx = layoutContext(dirPath, opts);
  await prepareLayout(ctx, opts);
  const { dir, description, blobPath } = ctx;
  const resolve = (target: string) => resolveTarget(ctx, target);

  const store: LayoutStore = {
    kind: 'layout',
    dir,
    description,
    blobPath,

    async makeTempDir(kind) {
      await mkdir(join(dir, TEMP_DIR), { recursive: true });
      return makeTempDir(join(dir, TEMP_DIR), kind);
    },

    async hasBlob(digest) {
      return (await blobSize(ctx, digest)) !== undefined;
    },

    getBlob: (digest) => openBlob(ctx, digest),
    putBlob: (input) => writeBlob(ctx, input),
    resolve,

    async getManifest(target): Promise<StoredManifest> {
      const found = await resolve(target);
      if (!found) throw manifestUnknown(description, target);
      return {
        bytes: await readManifestBlob(ctx, found.digest),
        mediaType: found.mediaType,
        digest: found.digest,
      };
    },

    putManifest: (manifest) => writeManifest(ctx, manifest),

    async listTags() {
      const { manifests } = await readIndex(ctx);
      const tags = new Set<string>();
      for (const m of manifests) {
        const t = refName(m);
        if (t !== undefined) tags.add(t);
      }
      return [...tags].sort();
    },

    async entries() {
      return (await readIndex(ctx)).manifests;
    },

    async removeTag(tag) {
      return updateIndex(ctx, (manifests) => {
        const before = manifests.length;
        for (let i = manifests.length - 1; i >= 0; i--)
          if (refName(manifests[i]!) === tag) manifests.splice(i, 1);
        return manifests.length !== before;
      });
    },
  };
  return store;
}

function layoutContext(dirPath: string, opts: OpenLayoutOptions): LayoutCtx {
  const dir = resolvePath(dirPath);
  const lockFile = join(dir, LOCK_FILE);
  return {
    dir,
    layoutFile: join(dir, 'oci-layout'),
    indexFile: join(dir, 'index.json'),
    description: `oci:${dir}`,
    underLock: <T>(fn: () => Promise<T>) => withFileLock(lockFile, fn, opts.lock),
    blobPath: (digest: Digest) => join(dir, 'blobs', digestAlgorithm(digest), digestHex(digest)),
  };
}

/** Check (or create) the layout on disk, sweep a destination's leftovers and validate oci-layout. */
async function prepareLayout(ctx: LayoutCtx, opts: OpenLayoutOptions): Promise<void> {
  const { dir, layoutFile } = ctx;
  await refuseFileInPath(dir);
  if (!(await exists(layoutFile))) {
    if (!opts.create) {
      throw new PackfarmError('LAYOUT_NOT_FOUND', `${dir} is not an OCI image layout (no oci-layout file)`, {
        hint: 'check the path; an oci: destination is created on write, a source must exist',
      });
    }
    await createLayout(dir, ctx.underLock);
  }
  // Opened as a destination: clear what killed writers left behind (their pids are gone).
  if (opts.create) await sweepLeftovers(dir);
  parseWith(
    OciLayoutSchema,
    parseJson(await readFile(layoutFile, 'utf8'), layoutFile),
    layoutFile,
    'INVALID_LAYOUT',
  );
}

async function readIndex(ctx: LayoutCtx): Promise<ImageIndex> {
  const { indexFile } = ctx;
  let text: string;
  try {
    text = await readFile(indexFile, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new PackfarmError('INVALID_LAYOUT', `${indexFile} is missing`, {
        hint: 'an OCI layout needs index.json beside oci-layout',
      });
    throw err;
  }
  return parseWith(ImageIndexSchema, parseJson(text, indexFile), indexFile, 'INVALID_LAYOUT');
}

/** Read-modify-write of index.json under the lock; `change` edits the manifests array in place. */
async function updateIndex<T>(
  ctx: LayoutCtx,
  change: (manifests: Descriptor[]) => Promise<T> | T,
): Promise<T> {
  return ctx.underLock(async () => {
    const index = await readIndex(ctx);
    const manifests = [...index.manifests];
    const result = await change(manifests);
    const next = {
      ...index,
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: sortEntries(manifests),
    };
    await writeFileAtomic(ctx.indexFile, canonicalJson(next));
    return result;
  });
}

async function blobSize(ctx: LayoutCtx, digest: Digest): Promise<number | undefined> {
  try {
    const s = await stat(ctx.blobPath(digest));
    return s.isFile() ? s.size : undefined;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
}

async function findEntry(ctx: LayoutCtx, target: string): Promise<Descriptor | undefined> {
  const { manifests } = await readIndex(ctx);
  if (isDigest(target)) return manifests.find((m) => m.digest === target);
  return manifests.find((m) => m.annotations?.[REF_NAME_ANNOTATION] === target);
}

async function readManifestBlob(ctx: LayoutCtx, digest: Digest): Promise<Buffer> {
  const { description, blobPath } = ctx;
  const size = await blobSize(ctx, digest);
  if (size === undefined) throw manifestUnknown(description, digest);
  if (size > MAX_MANIFEST_BYTES)
    throw new PackfarmError(
      'MANIFEST_INVALID',
      `${description}: blob ${digest} is ${size} bytes, too large to be a manifest (limit ${MAX_MANIFEST_BYTES})`,
    );
  const bytes = await readFile(blobPath(digest));
  const actual = hashOf(digestAlgorithm(digest), bytes);
  if (actual !== digest)
    throw new PackfarmError(
      'BLOB_DIGEST_MISMATCH',
      `${blobPath(digest)}: content hashes to ${actual}, not ${digest} (the layout is corrupt)`,
    );
  return bytes;
}

async function resolveTarget(ctx: LayoutCtx, target: string) {
  const { description, blobPath } = ctx;
  const entry = await findEntry(ctx, target);
  if (entry) {
    if ((await blobSize(ctx, entry.digest)) === undefined)
      throw new PackfarmError(
        'INVALID_LAYOUT',
        `${ctx.indexFile}: ${target} points at ${entry.digest}, but ${blobPath(entry.digest)} is missing`,
      );
    return { digest: entry.digest as Digest, mediaType: entry.mediaType, size: entry.size };
  }
  if (!isDigest(target)) return undefined;
  const size = await blobSize(ctx, target);
  if (size === undefined) return undefined;
  const bytes = await readManifestBlob(ctx, target);
  return { digest: target, mediaType: sniffMediaType(bytes, `${description}@${target}`), size };
}

async function ensureReferencedPresent(ctx: LayoutCtx, bytes: Buffer, mediaType: string, source: string) {
  const doc = parseJson(bytes.toString('utf8'), source);
  const refs: Descriptor[] = [];
  if (isIndexMediaType(mediaType)) refs.push(...parseWith(ImageIndexSchema, doc, source).manifests);
  else {
    const m = parseWith(ImageManifestSchema, doc, source);
    refs.push(m.config, ...m.layers);
  }
  for (const d of refs) {
    // Foreign / non-distributable layers (with urls) need not be in the store.
    if (d.urls && d.urls.length > 0) continue;
    if ((await blobSize(ctx, d.digest as Digest)) === undefined)
      throw new PackfarmError(
        'MANIFEST_BLOB_UNKNOWN',
        `${ctx.description}: ${source} references ${d.digest} (${d.mediaType}), which is not in the layout`,
        { hint: 'copy blobs and child manifests before the manifest that references them' },
      );
  }
  return isIndexMediaType(mediaType) ? refs.map((d) => d.digest) : [];
}

async function openBlob(ctx: LayoutCtx, digest: Digest): Promise<Readable> {
  const { description } = ctx;
  parseDigest(digest, `${description} blob`);
  const path = ctx.blobPath(digest);
  let fh: Awaited<ReturnType<typeof open>>;
  try {
    fh = await open(path, 'r');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT')
      throw new PackfarmError('BLOB_UNKNOWN', `${description}: blob ${digest} is not in the layout`);
    throw err;
  }
  const verify = verifyingStream(digest, path);
  // pipeline (not pipe) so a read error reaches the consumer of `verify`.
  streamPipeline(fh.createReadStream(), verify, () => {});
  return verify;
}

async function writeBlob(ctx: LayoutCtx, input: PutBlobInput): Promise<PutBlobResult> {
  const { dir, description } = ctx;
  if (input.digest !== undefined) {
    parseDigest(input.digest, `${description} blob`);
    const have = await blobSize(ctx, input.digest);
    if (have !== undefined && (input.size === undefined || have === input.size))
      return { digest: input.digest, size: have, outcome: 'exists' };
  }
  const algorithm = input.digest ? digestAlgorithm(input.digest) : 'sha256';
  await mkdir(join(dir, 'blobs', algorithm), { recursive: true });
  await mkdir(join(dir, TEMP_DIR), { recursive: true });
  const tmp = join(dir, TEMP_DIR, tempFileName('upload'));
  const hash = createHash(algorithm);
  let size = 0;
  try {
    const source = await input.open();
    await pipeline(
      source,
      new Transform({
        transform(chunk: Buffer, _enc, cb) {
          hash.update(chunk);
          size += chunk.length;
          cb(null, chunk);
        },
      }),
      createWriteStream(tmp, { flags: 'wx', flush: true }),
    );
    const digest = `${algorithm}:${hash.digest('hex')}` as Digest;
    if (input.digest !== undefined && digest !== input.digest)
      throw new PackfarmError(
        'BLOB_DIGEST_MISMATCH',
        `${description}: the data written for ${input.digest} hashes to ${digest}`,
        { hint: 'the source is corrupt or changed while it was being copied' },
      );
    if (input.size !== undefined && size !== input.size)
      throw new PackfarmError(
        'BLOB_SIZE_MISMATCH',
        `${description}: blob ${digest} has ${size} bytes, expected ${input.size}`,
      );
    const existed = (await blobSize(ctx, digest)) === size;
    await rename(tmp, ctx.blobPath(digest));
    return { digest, size, outcome: existed ? 'exists' : 'uploaded' };
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}

async function writeManifest(
  ctx: LayoutCtx,
  { bytes, mediaType, tag }: { bytes: Buffer; mediaType: string; tag?: string | undefined },
): Promise<Digest> {
  const { dir, description } = ctx;
  const digest = sha256Digest(bytes);
  const source = `manifest ${digest}`;
  if (tag !== undefined && !isValidRefName(tag))
    throw new PackfarmError(
      'INVALID_TAG',
      `${description}: "${tag}" cannot name an image in an OCI layout (allowed: letters, digits, separators . _ - : @ + and /)`,
    );
  const declared = sniffMediaType(bytes, source, mediaType);
  if (declared !== mediaType)
    throw new PackfarmError(
      'MANIFEST_INVALID',
      `${description}: ${source} says mediaType ${declared} but is being stored as ${mediaType}`,
    );
  const children = await ensureReferencedPresent(ctx, bytes, mediaType, source);
  if ((await blobSize(ctx, digest)) !== bytes.length) {
    await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
    await writeFileAtomic(ctx.blobPath(digest), bytes);
  }
  await updateIndex(ctx, (manifests) =>
    replaceEntries(manifests, new Set<string>(children), digest, mediaType, bytes.length, tag),
  );
  return digest;
}

/** index.json policy for a put manifest (see the LayoutStore comment); edits `manifests` in place. */
function replaceEntries(
  manifests: Descriptor[],
  childSet: Set<string>,
  digest: Digest,
  mediaType: string,
  size: number,
  tag: string | undefined,
): void {
  // Children of a new index no longer need entries of their own.
  for (let i = manifests.length - 1; i >= 0; i--) {
    const m = manifests[i]!;
    if (refName(m) === undefined && (childSet.has(m.digest) || (tag !== undefined && m.digest === digest)))
      manifests.splice(i, 1);
  }
  if (tag !== undefined) {
    for (let i = manifests.length - 1; i >= 0; i--)
      if (refName(manifests[i]!) === tag) manifests.splice(i, 1);
    manifests.push({
      mediaType,
      digest,
      size,
      annotations: { [REF_NAME_ANNOTATION]: tag },
    });
  } else if (!manifests.some((m) => m.digest === digest)) {
    manifests.push({ mediaType, digest, size });
  }
}

/**
 * Remove what writers killed mid-way left in the layout: their entries in `.packfarm-tmp/`, upload temp
 * files of older versions inside blobs/, and older versions' `.packfarm-export-*` dirs (no pid: an hour old).
 */
async function sweepLeftovers(dir: string): Promise<void> {
  await sweepDeadTemps(join(dir, TEMP_DIR));
  const blobs = join(dir, 'blobs');
  for (const alg of await readdir(blobs).catch(() => [] as string[])) {
    for (const name of await readdir(join(blobs, alg)).catch(() => [] as string[])) {
      const m = LEGACY_UPLOAD.exec(name);
      if (m && Number(m[1]) !== process.pid && !processAlive(Number(m[1])))
        await rm(join(blobs, alg, name), { force: true });
    }
  }
  await sweepOldEntries(dir, /^\.packfarm-export-/, 60 * 60 * 1000);
}

async function createLayout(dir: string, underLock: <T>(fn: () => Promise<T>) => Promise<T>): Promise<void> {
  let existing: string[] = [];
  try {
    existing = await readdir(dir);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
  }
  // Refuse to turn an unrelated, non-empty directory into a layout (think `oci:$HOME`). Lock and temp files
  // of a concurrent creator are fine.
  const foreign = existing.filter(
    (n) => !n.startsWith('.') && !['blobs', 'index.json', 'oci-layout'].includes(n),
  );
  if (foreign.length > 0)
    throw new PackfarmError(
      'LAYOUT_NOT_EMPTY',
      `${dir} exists, is not empty and is not an OCI image layout`,
      {
        hint: `use a new or empty directory (found ${foreign.slice(0, 3).join(', ')}${foreign.length > 3 ? ', …' : ''})`,
      },
    );
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await underLock(async () => {
    // Another process may have created it while we waited for the lock.
    if (!(await exists(join(dir, 'index.json'))))
      await writeFileAtomic(
        join(dir, 'index.json'),
        canonicalJson({ schemaVersion: 2, mediaType: MediaType.ociIndex, manifests: [] }),
      );
    if (!(await exists(join(dir, 'oci-layout'))))
      await writeFileAtomic(join(dir, 'oci-layout'), canonicalJson({ imageLayoutVersion: LAYOUT_VERSION }));
  });
}

function refName(d: Descriptor): string | undefined {
  return d.annotations?.[REF_NAME_ANNOTATION];
}

function sortEntries(manifests: Descriptor[]): Descriptor[] {
  const key = (d: Descriptor) => {
    const name = refName(d);
    return name === undefined ? `1${d.digest}` : `0${name}\u0000${d.digest}`;
  };
  return [...manifests].sort((a, b) => {
    const x = key(a);
    const y = key(b);
    return x < y ? -1 : x > y ? 1 : 0;
  });
}

/**
 * The media type of a manifest document: its own mediaType field, else inferred from its shape (OCI made the
 * field optional). When `expected` is given and the document has no mediaType, the expectation is taken.
 */
export function sniffMediaType(bytes: Buffer, source: string, expected?: string): string {
  const probe = parseWith(
    MediaTypeProbeSchema,
    parseJson(bytes.toString('utf8'), source),
    source,
    'MANIFEST_INVALID',
  );
  if (probe.mediaType) return probe.mediaType;
  if (expected) return expected;
  if (probe.manifests) return MediaType.ociIndex;
  if (probe.config) return MediaType.ociManifest;
  throw new PackfarmError('MANIFEST_INVALID', `${source}: neither an image manifest nor an index`);
}

function manifestUnknown(where: string, target: string): PackfarmError {
  return new PackfarmError('MANIFEST_UNKNOWN', `${where}: no image ${target}`, {
    hint: isDigest(target) ? undefined : 'list the tags with `packfarm image inspect` or skopeo',
  });
}

function hashOf(algorithm: string, bytes: Uint8Array): Digest {
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}` as Digest;
}

/** Passes bytes through and fails at the end if they do not hash to `digest`. */
export function verifyingStream(digest: Digest, source: string): Transform {
  const hash = createHash(digestAlgorithm(digest));
  return new Transform({
    transform(chunk: Buffer, _enc, cb: TransformCallback) {
      hash.update(chunk);
      cb(null, chunk);
    },
    flush(cb: TransformCallback) {
      const actual = `${digestAlgorithm(digest)}:${hash.digest('hex')}`;
      if (actual === digest) cb();
      else
        cb(
          new PackfarmError('BLOB_DIGEST_MISMATCH', `${source}: content hashes to ${actual}, not ${digest}`, {
            hint: 'the blob is corrupt; copy the image again',
          }),
        );
    },
  });
}

/**
 * A layout is a directory: a regular file at `dir`, or above it, would otherwise surface as a bare ENOTDIR
 * from deep inside the store (say `--cache-image oci:cache.tar`). A missing `dir` is fine (created on write).
 */
async function refuseFileInPath(dir: string): Promise<void> {
  let file: string | undefined;
  try {
    if (!(await stat(dir)).isDirectory()) file = dir;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return;
    if (code !== 'ENOTDIR') throw err;
    // Some parent is not a directory: name it.
    for (let p = dirname(dir); p !== dirname(p) && file === undefined; p = dirname(p)) {
      const s = await stat(p).catch(() => undefined);
      if (s && !s.isDirectory()) file = p;
    }
    file ??= dir;
  }
  if (file === undefined) return;
  throw new PackfarmError(
    'LAYOUT_NOT_A_DIRECTORY',
    file === dir
      ? `oci:${dir} is a file, not an OCI image layout directory`
      : `oci:${dir} cannot be a layout directory: ${file} is a file`,
    { hint: 'an oci: location names a directory (created on write when missing), e.g. oci:./out:tag' },
  );
}

async function exists(path: string): Promise<boolean> {
  try {
    await stat(path);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return false;
    throw err;
  }
}

/** A Readable over an in-memory buffer (for small blobs such as configs). */
export function bufferStream(bytes: Uint8Array): Readable {
  return Readable.from([Buffer.from(bytes)]);
}
