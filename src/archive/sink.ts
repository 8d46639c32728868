import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { dirname } from 'node:path';
import { Readable, Transform } from 'node:stream';
import type { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { type Digest, createDigester } from '../oci/digest.js';
import { PackfarmError } from '../util/errors.js';
import { tempPathFor } from '../util/fs.js';
import { createParallelGzip } from './parallel-gzip.js';

/** Where a layer goes: a file path (written atomically) or a stream (ended when the layer is complete). */
export type LayerOutput = string | Writable;

export type LayerCompression = 'gzip' | 'none';

/**
 * Level 1 is the default: on a tree of source files and binaries it costs a few percent more bytes than level 6
 * and runs several times faster (bench/layer.mjs prints both), and layers are written far more often than read.
 */
export const DEFAULT_GZIP_LEVEL = 1;

export interface BlobSinkOptions {
  out: LayerOutput;
  compression?: LayerCompression;
  gzipLevel?: number;
  signal?: AbortSignal;
}

export interface BlobDigests {
  /** Digest of the bytes written to `out` (the blob). */
  digest: Digest;
  size: number;
  /** Digest of the uncompressed tar: the layer's diffID. */
  diffId: Digest;
  uncompressedSize: number;
}

/**
 * Stream tar bytes to `out` in one pass: hash (diffID) → gzip → hash (digest) and count → out. Nothing is
 * buffered beyond the streams' high-water marks.
 */
export async function writeTarBlob(tar: AsyncIterable<Buffer>, opts: BlobSinkOptions): Promise<BlobDigests> {
  const compression = opts.compression ?? 'gzip';
  const level = opts.gzipLevel ?? DEFAULT_GZIP_LEVEL;
  if (compression === 'gzip' && (!Number.isInteger(level) || level < 0 || level > 9)) {
    throw new PackfarmError('INVALID_GZIP_LEVEL', `gzip level ${level} is not an integer from 0 to 9`);
  }
  const diff = createDigester();
  const blob = createDigester();
  const stages: Array<NodeJS.ReadableStream | NodeJS.WritableStream | NodeJS.ReadWriteStream> = [
    Readable.from(tar, { objectMode: false, highWaterMark: 1 << 20 }),
    tap((chunk) => diff.update(chunk)),
  ];
  if (compression === 'gzip') {
    stages.push(
      createParallelGzip({ level }),
      tap((chunk) => blob.update(chunk)),
    );
  }
  await runToOutput(stages, opts.out, opts.signal);
  const diffId = diff.digest();
  return compression === 'gzip'
    ? { digest: blob.digest(), size: blob.size(), diffId, uncompressedSize: diff.size() }
    : { digest: diffId, size: diff.size(), diffId, uncompressedSize: diff.size() };
}

function tap(fn: (chunk: Buffer) => void): Transform {
  return new Transform({
    transform(chunk: Buffer, _encoding, callback) {
      fn(chunk);
      callback(null, chunk);
    },
  });
}

async function runToOutput(
  stages: Array<NodeJS.ReadableStream | NodeJS.WritableStream | NodeJS.ReadWriteStream>,
  out: LayerOutput,
  signal: AbortSignal | undefined,
): Promise<void> {
  const options = signal ? { signal } : {};
  if (typeof out !== 'string') {
    // biome-ignore lint/suspicious/noExplicitAny: pipeline's variadic overloads do not accept a spread array
    await (pipeline as any)(...stages, out, options);
    return;
  }
  await mkdir(dirname(out), { recursive: true });
  const tmp = tempPathFor(out);
  try {
    // flush: fsync before close, so the rename below never exposes a file whose bytes are not on disk yet.
    const ws = createWriteStream(tmp, { flags: 'wx', mode: 0o644, flush: true, highWaterMark: 1 << 20 });
    // biome-ignore lint/suspicious/noExplicitAny: as above
    await (pipeline as any)(...stages, ws, options);
    await rename(tmp, out);
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }
}
