import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { GZIP_BLOCK_SIZE, createParallelGzip } from './parallel-gzip.js';

async function gzip(data: Buffer, level: number, concurrency?: number, chunk = 100_000): Promise<Buffer> {
  const pieces: Buffer[] = [];
  for (let i = 0; i < data.length; i += chunk) pieces.push(data.subarray(i, i + chunk));
  const out: Buffer[] = [];
  const gz = createParallelGzip({ level, ...(concurrency === undefined ? {} : { concurrency }) });
  const done = (async () => {
    for await (const c of gz) out.push(c as Buffer);
  })();
  for await (const p of Readable.from(pieces)) {
    if (!gz.write(p)) await new Promise((r) => gz.once('drain', r));
  }
  gz.end();
  await done;
  return Buffer.concat(out);
}

function mixed(size: number): Buffer {
  const text = Buffer.from('the quick brown fox jumps over the lazy dog\n'.repeat(Math.ceil(size / 88)));
  return Buffer.concat([text.subarray(0, size / 2), randomBytes(size - Math.floor(size / 2))]).subarray(
    0,
    size,
  );
}

describe('createParallelGzip', () => {
  it.each([
    0,
    1,
    GZIP_BLOCK_SIZE - 1,
    GZIP_BLOCK_SIZE,
    GZIP_BLOCK_SIZE + 1,
    Math.floor(3.5 * GZIP_BLOCK_SIZE),
  ])('round-trips %i bytes through gunzip', async (size) => {
    const data = mixed(size);
    const gz = await gzip(data, 1);
    expect(gunzipSync(gz).equals(data)).toBe(true);
  });

  it('gives the same bytes whatever the concurrency and input chunking', async () => {
    const data = mixed(5 * GZIP_BLOCK_SIZE + 12345);
    const one = await gzip(data, 6, 1, 7777);
    const four = await gzip(data, 6, 4, 1 << 20);
    expect(four.equals(one)).toBe(true);
  });

  it('writes a header without timestamp and with a fixed OS byte', async () => {
    const gz = await gzip(Buffer.from('hello'), 1);
    expect(gz.subarray(0, 10).toString('hex')).toBe('1f8b0800000000000403');
    const gz9 = await gzip(Buffer.from('hello'), 9);
    expect(gz9.subarray(0, 10).toString('hex')).toBe('1f8b0800000000000203');
  });

  it('compresses text across block boundaries (each block sees the previous one as dictionary)', async () => {
    const text = Buffer.from('0123456789abcdef'.repeat(GZIP_BLOCK_SIZE / 4));
    const gz = await gzip(text, 1);
    expect(gz.length).toBeLessThan(text.length / 100);
  });
});
