import { createReadStream } from 'node:fs';
import { type Digest, createDigester } from '../oci/digest.js';
import { PackfarmError } from '../util/errors.js';

export interface DigestAndSize {
  digest: Digest;
  size: number;
}

/** sha256 and byte count of everything a stream yields. */
export async function digestStream(
  stream: NodeJS.ReadableStream | AsyncIterable<Uint8Array>,
): Promise<DigestAndSize> {
  const d = createDigester();
  for await (const chunk of stream as AsyncIterable<Uint8Array | string>) {
    d.update(typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk);
  }
  return { digest: d.digest(), size: d.size() };
}

/** sha256 and size of a file, streamed. */
export async function digestFile(path: string): Promise<DigestAndSize> {
  try {
    return await digestStream(createReadStream(path, { highWaterMark: 1 << 20 }));
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    throw new PackfarmError(
      'FILE_UNREADABLE',
      `${path}: cannot read to compute its digest: ${e.code ?? e.message}`,
      {
        cause: err,
      },
    );
  }
}
