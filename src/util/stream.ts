import { Writable } from 'node:stream';
import { PackfarmError } from './errors.js';
import { parseJson } from './validate.js';

type ByteSource = NodeJS.ReadableStream | AsyncIterable<Uint8Array | string>;

/**
 * Read a whole stream into memory, refusing more than `maxBytes` (TOO_LARGE, naming `source`). Reading stops
 * at the cap, and a stream source is destroyed then, so a hostile peer cannot make us hold more.
 */
export async function readCapped(stream: ByteSource, maxBytes: number, source: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  const it = (stream as AsyncIterable<Uint8Array | string>)[Symbol.asyncIterator]();
  try {
    for (;;) {
      const r = await it.next();
      if (r.done) break;
      const chunk = typeof r.value === 'string' ? Buffer.from(r.value, 'utf8') : Buffer.from(r.value);
      size += chunk.length;
      if (size > maxBytes) {
        throw new PackfarmError(
          'TOO_LARGE',
          `${source}: more than ${maxBytes} bytes; refusing to read further`,
          {
            hint: 'the document is larger than packfarm accepts for this kind of content',
          },
        );
      }
      chunks.push(chunk);
    }
  } finally {
    // Ends the read early (destroying a Node stream) when we stop before the end.
    await it.return?.();
  }
  return Buffer.concat(chunks, size);
}

/** Read and parse JSON of at most `maxBytes`; errors name `source`. The value is unvalidated: parse it with zod. */
export async function readJsonCapped(stream: ByteSource, maxBytes: number, source: string): Promise<unknown> {
  const bytes = await readCapped(stream, maxBytes, source);
  return parseJson(bytes.toString('utf8'), source);
}

/** A sink that drops what it is given: for writers whose digests are all we want. */
export function discard(): Writable {
  return new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });
}
