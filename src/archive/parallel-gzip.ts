import { availableParallelism } from 'node:os';
import { Transform, type TransformCallback } from 'node:stream';
import { constants, crc32, deflateRaw } from 'node:zlib';

/**
 * gzip that compresses several blocks at once on libuv's thread pool, the way pigz does: the input is cut into
 * fixed-size blocks, each deflated on its own with the previous block's last 32 KiB as its dictionary and
 * ended with a sync flush (the last one with a final block), and the raw deflate pieces are concatenated in
 * order into one gzip member. The output is a single ordinary gzip stream, and because the cut points, the
 * dictionaries and the settings are fixed it depends only on the input — not on timing or thread count.
 *
 * Why: deflate is the slowest step of writing a layer (random-ish binaries deflate at ~25 MB/s per core with
 * Node's zlib) while hashing and reading are cheap, so spreading it over the cores is what makes writeLayer
 * keep up with `tar | gzip`.
 */

/** Uncompressed bytes per independently deflated block. Part of the output format: changing it changes digests. */
export const GZIP_BLOCK_SIZE = 1 << 20;
const WINDOW = 32 * 1024;

export interface ParallelGzipOptions {
  level: number;
  /** Blocks deflated at the same time; default: the number of CPUs, at most 4 (libuv's default pool size). */
  concurrency?: number;
}

function deflateBlock(
  data: Buffer,
  level: number,
  dictionary: Buffer | undefined,
  last: boolean,
): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    deflateRaw(
      data,
      {
        level,
        memLevel: 9,
        ...(dictionary ? { dictionary } : {}),
        finishFlush: last ? constants.Z_FINISH : constants.Z_SYNC_FLUSH,
      },
      (err, out) => (err ? reject(err) : resolve(out)),
    );
  });
}

export function createParallelGzip(opts: ParallelGzipOptions): Transform {
  const level = opts.level;
  const concurrency = Math.max(1, opts.concurrency ?? Math.min(4, availableParallelism()));
  let parts: Buffer[] = [];
  let partBytes = 0;
  let previousTail: Buffer | undefined;
  let crc = 0;
  let inputSize = 0;
  const inFlight: Array<Promise<Buffer>> = [];
  let headerSent = false;

  // XFL as zlib writes it: 4 = fastest, 2 = best compression; OS 3 = Unix, whatever platform we run on.
  const header = Buffer.from([0x1f, 0x8b, 8, 0, 0, 0, 0, 0, level === 1 ? 4 : level === 9 ? 2 : 0, 3]);

  const takeBlock = (n: number): Buffer => {
    const all = parts.length === 1 ? parts[0]! : Buffer.concat(parts, partBytes);
    const block = all.subarray(0, n);
    const rest = all.subarray(n);
    parts = rest.length > 0 ? [rest] : [];
    partBytes = rest.length;
    return block;
  };

  const start = (block: Buffer, last: boolean) => {
    const dictionary = previousTail;
    // Copy the tail: `block` may be a view on a buffer that is reused or released.
    previousTail = Buffer.from(block.subarray(Math.max(0, block.length - WINDOW)));
    const p = deflateBlock(block, level, dictionary, last);
    p.catch(() => {}); // awaited in order below; this only keeps an early rejection from being "unhandled"
    inFlight.push(p);
  };

  const drainTo = async (self: Transform, limit: number) => {
    if (!headerSent) {
      self.push(header);
      headerSent = true;
    }
    while (inFlight.length > limit) self.push(await inFlight.shift()!);
  };

  return new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      crc = crc32(chunk, crc);
      inputSize += chunk.length;
      parts.push(chunk);
      partBytes += chunk.length;
      const pending: Buffer[] = [];
      // Keep at least one byte back: the final block must be started by flush() with Z_FINISH.
      while (partBytes > GZIP_BLOCK_SIZE) pending.push(takeBlock(GZIP_BLOCK_SIZE));
      if (pending.length === 0) return callback();
      (async () => {
        for (const block of pending) {
          await drainTo(this, concurrency - 1);
          start(block, false);
        }
      })().then(() => callback(), callback);
    },
    flush(callback: TransformCallback) {
      (async () => {
        start(takeBlock(partBytes), true);
        await drainTo(this, 0);
        const trailer = Buffer.alloc(8);
        trailer.writeUInt32LE(crc >>> 0, 0);
        trailer.writeUInt32LE(inputSize % 2 ** 32, 4);
        this.push(trailer);
      })().then(() => callback(), callback);
    },
  });
}
