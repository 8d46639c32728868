import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { isPackfarmError } from './errors.js';
import { readCapped, readJsonCapped } from './stream.js';

describe('readJsonCapped', () => {
  it('parses JSON split over chunks', async () => {
    const stream = Readable.from([Buffer.from('{"a":'), Buffer.from('[1,2]}')]);
    expect(await readJsonCapped(stream, 100, 'manifest.json')).toEqual({ a: [1, 2] });
  });

  it('accepts exactly maxBytes and refuses one more, naming the source, and stops reading', async () => {
    expect(await readCapped(Readable.from([Buffer.from('1234')]), 4, 'x')).toEqual(Buffer.from('1234'));
    let pulled = 0;
    const endless = new Readable({
      read() {
        pulled += 1;
        this.push(Buffer.alloc(1024, 0x20));
      },
    });
    const err = await readJsonCapped(endless, 10_000, 'https://r.example/v2/x/manifests/latest').catch(
      (e: unknown) => e,
    );
    expect(isPackfarmError(err, 'TOO_LARGE')).toBe(true);
    expect((err as Error).message).toBe(
      'https://r.example/v2/x/manifests/latest: more than 10000 bytes; refusing to read further',
    );
    expect(pulled).toBeLessThan(40);
    expect(endless.destroyed).toBe(true);
  });

  it('names the source when the JSON is invalid', async () => {
    const err = await readJsonCapped(Readable.from(['{nope']), 100, 'index.json').catch((e: unknown) => e);
    expect(isPackfarmError(err, 'INVALID_JSON')).toBe(true);
    expect((err as Error).message).toMatch(/^index\.json: not valid JSON/);
  });
});
