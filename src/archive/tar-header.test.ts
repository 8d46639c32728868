import { describe, expect, it } from 'vitest';
import { listTar } from '../../test/fixtures/archive/tars.js';
import { BLOCK, TAR_TRAILER, type TarHeader, encodeTarHeader, tarPadding } from './tar-header.js';

const base: TarHeader = { name: 'x', type: 'file', mode: 0o644, uid: 0, gid: 0, size: 0, mtime: 315532801 };

function archive(...headers: TarHeader[]): Buffer {
  return Buffer.concat([...headers.map((h) => encodeTarHeader(h)), TAR_TRAILER]);
}

function field(block: Buffer, offset: number, width: number): string {
  return block.subarray(offset, offset + width).toString('latin1');
}

describe('encodeTarHeader', () => {
  it('writes a USTAR block with octal fields, blank owner names and a valid checksum', () => {
    const b = encodeTarHeader({ ...base, name: 'dir/file.txt', mode: 0o4755, uid: 1000, gid: 1001, size: 5 });
    expect(b.length).toBe(BLOCK);
    expect(field(b, 0, 12)).toBe('dir/file.txt');
    expect(field(b, 100, 8)).toBe('0004755\0');
    expect(field(b, 108, 8)).toBe('0001750\0');
    expect(field(b, 116, 8)).toBe('0001751\0');
    expect(field(b, 124, 12)).toBe('00000000005\0');
    expect(field(b, 136, 12)).toBe('02263523001\0');
    expect(field(b, 257, 8)).toBe('ustar\u000000');
    expect(b.subarray(265, 329).every((x) => x === 0)).toBe(true); // uname, gname
    const stored = Number.parseInt(field(b, 148, 6), 8);
    const copy = Buffer.from(b);
    copy.fill(0x20, 148, 156);
    expect(stored).toBe(copy.reduce((s, x) => s + x, 0));
  });

  it('keeps a mode of 0 (tar-stream would turn it into 0644)', async () => {
    const [e] = await listTar(archive({ ...base, mode: 0 }));
    expect(e?.mode).toBe(0);
  });

  it('adds the trailing slash to directory names', () => {
    expect(field(encodeTarHeader({ ...base, name: 'a/b', type: 'dir' }), 0, 5)).toBe('a/b/\0');
  });

  it('splits names up to 256 bytes into prefix and name, and uses PAX beyond', async () => {
    const mid = `${'p'.repeat(150)}/${'n'.repeat(99)}`;
    expect(encodeTarHeader({ ...base, name: mid }).length).toBe(BLOCK);
    const long = `${'d'.repeat(120)}/${'e'.repeat(120)}/${'f'.repeat(150)}`;
    const paxed = encodeTarHeader({ ...base, name: long });
    expect(paxed.length).toBeGreaterThan(BLOCK);
    expect(String.fromCharCode(paxed[156]!)).toBe('x');
    const names = (await listTar(archive({ ...base, name: mid }, { ...base, name: long }))).map(
      (e) => e.name,
    );
    expect(names).toEqual([mid, long]);
  });

  it('gets PAX record lengths right around digit-count boundaries', async () => {
    // A record's length counts its own digits; names of these lengths cross the 2→3 and 3→4 digit boundaries.
    const lengths = [
      86, 87, 88, 89, 90, 91, 92, 93, 94, 95, 96, 97, 98, 99, 990, 991, 992, 993, 994, 995, 996,
    ];
    const headers = lengths.map((n, i) => ({
      ...base,
      name: `${String(i).padStart(2, '0')}é${'z'.repeat(n)}`,
    }));
    const listed = await listTar(archive(...headers));
    expect(listed.map((e) => e.name)).toEqual(headers.map((h) => h.name));
  });

  it('stores non-ASCII names, long link names, and large ids through PAX', async () => {
    const entries: TarHeader[] = [
      { ...base, name: 'ünïcødé.txt' },
      { ...base, name: 'l', type: 'symlink', mode: 0o777, linkname: `/${'t'.repeat(300)}` },
      { ...base, name: 'h', type: 'link', linkname: 'ünïcødé.txt' },
      { ...base, name: 'big-ids', uid: 3_000_000, gid: 4_000_000 },
    ];
    const listed = await listTar(archive(...entries));
    expect(listed.map((e) => [e.name, e.type, e.linkname])).toEqual([
      ['ünïcødé.txt', 'file', null],
      ['l', 'symlink', `/${'t'.repeat(300)}`],
      ['h', 'link', 'ünïcødé.txt'],
      ['big-ids', 'file', null],
    ]);
    // tar-stream ignores PAX uid/gid; the header field holds 0 and GNU tar (integration test) reads the PAX value.
    expect(encodeTarHeader(entries[3]!).toString('latin1')).toContain(' uid=3000000\n');
  });

  it('is a pure function of its input', () => {
    const h: TarHeader = {
      ...base,
      name: `${'q'.repeat(200)}/ß`,
      type: 'symlink',
      linkname: 'x'.repeat(150),
    };
    expect(encodeTarHeader(h).equals(encodeTarHeader({ ...h }))).toBe(true);
  });

  it('refuses an mtime before 1970', () => {
    expect(() => encodeTarHeader({ ...base, mtime: -1 })).toThrow(/mtime/);
  });
});

describe('tarPadding', () => {
  it('pads to the next block boundary', () => {
    expect(tarPadding(0).length).toBe(0);
    expect(tarPadding(1).length).toBe(511);
    expect(tarPadding(512).length).toBe(0);
    expect(tarPadding(513).length).toBe(511);
  });
});
