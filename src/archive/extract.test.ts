import { createHash } from 'node:crypto';
import {
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { type FixtureEntry, makeTar, makeTarGz } from '../../test/fixtures/archive/tars.js';
import { isPackfarmError } from '../util/errors.js';
import { type ExtractLayerOptions, extractLayer } from './extract.js';
import { writeLayer } from './layer-writer.js';
import { requireRoot } from '../../test/helpers/root.js';

let tmp: string;
/** The parent of every destination: nothing may ever appear here besides `dest`. */
let sentinel: string;
let dest: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-extract-'));
  sentinel = join(tmp, 'sentinel');
  dest = join(sentinel, 'dest');
  await mkdir(dest, { recursive: true });
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function extract(bytes: Buffer, opts: Partial<ExtractLayerOptions> = {}) {
  return extractLayer({ source: Readable.from([bytes]), dest, ...opts });
}

async function refusal(
  bytes: Buffer,
  opts: Partial<ExtractLayerOptions> = {},
): Promise<{ code: string; message: string }> {
  try {
    await extract(bytes, opts);
  } catch (err) {
    if (isPackfarmError(err)) return { code: err.code, message: err.message };
    throw err;
  }
  throw new Error('extraction was expected to fail');
}

async function tree(root: string): Promise<string[]> {
  const out: string[] = [];
  const walk = async (dir: string, rel: string) => {
    for (const name of (await readdir(dir)).sort()) {
      const p = join(dir, name);
      const s = await lstat(p);
      const r = rel ? `${rel}/${name}` : name;
      if (s.isDirectory()) {
        out.push(`${r}/`);
        await walk(p, r);
      } else if (s.isSymbolicLink()) out.push(`${r} -> ${await readlink(p)}`);
      else out.push(`${r} = ${await readFile(p, 'utf8')}`);
    }
  };
  await walk(root, '');
  return out;
}

async function expectSentinelClean(): Promise<void> {
  expect(await readdir(sentinel)).toEqual(['dest']);
}

describe('extractLayer', () => {
  it('round-trips a layer written by writeLayer: content, modes, links, mtimes', async () => {
    const src = join(tmp, 'src');
    await mkdir(join(src, 'd', 'e'), { recursive: true });
    await writeFile(join(src, 'd', 'f'), 'hello');
    await writeFile(join(src, 'x'), 'x');
    await symlink('d/f', join(src, 'l'));
    const { link, chmod } = await import('node:fs/promises');
    await link(join(src, 'd', 'f'), join(src, 'h'));
    await chmod(join(src, 'x'), 0o4750);
    await chmod(join(src, 'd', 'e'), 0o700);
    const r = await writeLayer({
      dir: src,
      out: join(tmp, 'l.tgz'),
      mtime: new Date('2001-01-01T00:00:00Z'),
    });
    const blob = await readFile(join(tmp, 'l.tgz'));
    const x = await extract(blob);
    expect(x).toEqual({
      digest: r.digest,
      size: r.size,
      diffId: r.diffId,
      uncompressedSize: r.uncompressedSize,
      entries: r.entries,
    });
    expect(await tree(dest)).toEqual(['d/', 'd/e/', 'd/f = hello', 'h = hello', 'l -> d/f', 'x = x']);
    expect((await stat(join(dest, 'x'))).mode & 0o7777).toBe(0o4750);
    expect((await stat(join(dest, 'd', 'e'))).mode & 0o7777).toBe(0o700);
    expect((await stat(join(dest, 'h'))).ino).toBe((await stat(join(dest, 'd', 'f'))).ino);
    for (const p of ['d', 'd/e', 'd/f', 'x']) {
      expect((await stat(join(dest, p))).mtime.toISOString()).toBe('2001-01-01T00:00:00.000Z');
    }
    expect((await lstat(join(dest, 'l'))).mtime.toISOString()).toBe('2001-01-01T00:00:00.000Z');
  });

  it('reads plain tars too, and accepts "./" and "/" prefixes', async () => {
    const tar = await makeTar([
      { name: './', type: 'directory' },
      { name: './a/', type: 'directory' },
      { name: './a/b', content: 'b' },
      { name: '/abs/c', content: 'c' },
    ]);
    const r = await extract(tar);
    expect(r.digest).toBe(sha256(tar));
    expect(r.diffId).toBe(sha256(tar));
    expect(await tree(dest)).toEqual(['a/', 'a/b = b', 'abs/', 'abs/c = c']);
    await expectSentinelClean();
  });

  it('reports the compressed digest and the diffID of a gzip layer', async () => {
    const gz = await makeTarGz([{ name: 'f', content: 'f' }]);
    const r = await extract(gz);
    expect(r.digest).toBe(sha256(gz));
    expect(r.diffId).toBe(sha256(gunzipSync(gz)));
  });

  it('refuses zstd, xz and empty input with clear errors', async () => {
    const zstd = Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0]);
    expect(await refusal(zstd, { name: 'layer sha256:abc' })).toEqual({
      code: 'UNSUPPORTED_LAYER_COMPRESSION',
      message: 'layer sha256:abc: zstd-compressed layers are not supported',
    });
    // A refused stream is destroyed, not left half-read.
    const stream = Readable.from([zstd, Buffer.alloc(100)]);
    await expect(extractLayer({ source: stream, dest })).rejects.toThrow(/zstd/);
    expect(stream.destroyed).toBe(true);
    expect((await refusal(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 1]))).code).toBe(
      'UNSUPPORTED_LAYER_COMPRESSION',
    );
    expect((await refusal(Buffer.alloc(0))).code).toBe('INVALID_LAYER');
    expect((await refusal(Buffer.from('this is not a tar archive at all'.repeat(20)))).code).toBe(
      'INVALID_LAYER',
    );
  });

  describe('hostile entries', () => {
    const cases: Array<[string, FixtureEntry[], RegExp]> = [
      [
        'a ".." component',
        [{ name: '../escaped', content: 'x' }],
        /"\.\.\/escaped" refused: .*"\.\." component/,
      ],
      [
        'a nested ".." component',
        [{ name: 'a/../../escaped', content: 'x' }],
        /"a\/\.\.\/\.\.\/escaped" refused/,
      ],
      [
        'a write through a symlink to outside',
        [
          { name: 'link', type: 'symlink', linkname: '..' },
          { name: 'link/escaped', content: 'x' },
        ],
        /"link\/escaped" refused: its parent "link" is a symlink/,
      ],
      [
        'a hardlink to ".."',
        [{ name: 'h', type: 'link', linkname: '../escaped' }],
        /"h" refused: its hardlink target has a "\.\." component/,
      ],
      [
        'a hardlink to an absolute path that is not in dest',
        [{ name: 'h', type: 'link', linkname: '/etc/passwd' }],
        /"h" refused: its hardlink target "\/etc\/passwd" does not exist in the destination/,
      ],
      [
        'a hardlink through a symlink',
        [
          { name: 'up', type: 'symlink', linkname: '/etc' },
          { name: 'h', type: 'link', linkname: 'up/passwd' },
        ],
        /"h" refused: its parent "up" is a symlink/,
      ],
      [
        'a character device',
        [{ name: 'null', type: 'character-device', devmajor: 1, devminor: 3 }],
        /"null" refused: it is a character-device node/,
      ],
      ['a fifo', [{ name: 'p', type: 'fifo' }], /"p" refused: it is a fifo node/],
    ];
    it.each(cases)(
      'refuses %s, naming the entry, and writes nothing outside',
      async (_what, entries, message) => {
        await writeFile(join(tmp, 'escaped'), 'original');
        const r = await refusal(await makeTarGz(entries));
        expect(r.code).toBe('UNSAFE_LAYER_ENTRY');
        expect(r.message).toMatch(message);
        await expectSentinelClean();
        expect(await readFile(join(tmp, 'escaped'), 'utf8')).toBe('original');
      },
    );

    it('never writes through a symlink that an earlier layer left in dest', async () => {
      await symlink(sentinel, join(dest, 'out'));
      const r = await refusal(await makeTarGz([{ name: 'out/evil', content: 'x' }]));
      expect(r.message).toMatch(/"out\/evil" refused: its parent "out" is a symlink/);
      await expectSentinelClean();
    });

    it('replaces a symlink with a file rather than writing through it', async () => {
      await writeFile(join(tmp, 'victim'), 'original');
      await extract(await makeTarGz([{ name: 'f', type: 'symlink', linkname: join(tmp, 'victim') }]));
      await extract(await makeTarGz([{ name: 'f', content: 'new' }]));
      expect(await readFile(join(tmp, 'victim'), 'utf8')).toBe('original');
      expect(await tree(dest)).toEqual(['f = new']);
    });

    it('within-root: follows symlinks as if dest were /, never leaving it', async () => {
      const layer = await makeTarGz([
        { name: 'usr/lib/', type: 'directory' },
        { name: 'lib', type: 'symlink', linkname: '/usr/lib' },
        { name: 'up', type: 'symlink', linkname: '../../../..' },
        { name: 'lib/libc.so', content: 'libc' },
        { name: 'up/etc/evil', content: 'x' },
      ]);
      await extract(layer, { parentSymlinks: 'within-root' });
      expect(await tree(dest)).toEqual([
        'etc/',
        'etc/evil = x',
        'lib -> /usr/lib',
        'up -> ../../../..',
        'usr/',
        'usr/lib/',
        'usr/lib/libc.so = libc',
      ]);
      await expectSentinelClean();
    });

    it('creates fifos when allowDevices is set', async () => {
      await extract(await makeTarGz([{ name: 'p', type: 'fifo', mode: 0o640 }]), { allowDevices: true });
      const s = await lstat(join(dest, 'p'));
      expect(s.isFIFO()).toBe(true);
      expect(s.mode & 0o777).toBe(0o640);
    });
  });

  describe('whiteouts', () => {
    const lower: FixtureEntry[] = [
      { name: 'a/', type: 'directory' },
      { name: 'a/b', content: 'b' },
      { name: 'a/c', content: 'c' },
      { name: 'a/sub/', type: 'directory' },
      { name: 'a/sub/old', content: 'old' },
      { name: 'd/', type: 'directory' },
      { name: 'd/inner', content: 'inner' },
      { name: 'keep', content: 'keep' },
    ];

    it('.wh.<name> deletes files and whole directories of lower layers', async () => {
      await extract(await makeTarGz(lower));
      await extract(
        await makeTarGz([
          { name: 'a/', type: 'directory' },
          { name: 'a/.wh.b', content: '' },
          { name: '.wh.d', content: '' },
          { name: '.wh.never-existed', content: '' },
        ]),
      );
      expect(await tree(dest)).toEqual(['a/', 'a/c = c', 'a/sub/', 'a/sub/old = old', 'keep = keep']);
    });

    it('an opaque directory loses its lower contents but keeps this layer’s, whatever the order', async () => {
      await extract(await makeTarGz(lower));
      await extract(
        await makeTarGz([
          { name: 'a/', type: 'directory' },
          // '-' sorts before '.', so this entry precedes the marker, as in a name-sorted tar.
          { name: 'a/-early', content: 'early' },
          { name: 'a/sub/new', content: 'new' },
          { name: 'a/.wh..wh..opq', content: '' },
          { name: 'a/late', content: 'late' },
        ]),
      );
      expect(await tree(dest)).toEqual([
        'a/',
        'a/-early = early',
        'a/late = late',
        'a/sub/',
        'a/sub/new = new',
        'd/',
        'd/inner = inner',
        'keep = keep',
      ]);
    });

    it('a whiteout does not remove what the same layer wrote', async () => {
      await extract(await makeTarGz(lower));
      await extract(
        await makeTarGz([
          { name: 'd/new', content: 'new' },
          { name: '.wh.d', content: '' },
        ]),
      );
      expect(await tree(dest)).toContain('d/new = new');
      expect(await tree(dest)).not.toContain('d/inner = inner');
    });

    it('counts whiteouts among the entries and reports them', async () => {
      const seen: string[] = [];
      const r = await extract(
        await makeTarGz([
          { name: '.wh.x', content: '' },
          { name: 'y/.wh..wh..opq', content: '' },
        ]),
        { onEntry: (e) => seen.push(`${e.type}:${e.path}`) },
      );
      expect(r.entries).toBe(2);
      expect(seen).toEqual(['whiteout:.wh.x', 'opaque:y/.wh..wh..opq']);
    });
  });

  it('replaces a directory with a file and a file with a directory', async () => {
    await extract(
      await makeTarGz([
        { name: 'x/', type: 'directory' },
        { name: 'x/inner', content: 'i' },
        { name: 'y', content: 'y' },
      ]),
    );
    await extract(
      await makeTarGz([
        { name: 'x', content: 'now a file' },
        { name: 'y/', type: 'directory' },
      ]),
    );
    expect(await tree(dest)).toEqual(['x = now a file', 'y/']);
  });

  it('sets directory modes after their contents are written, so read-only directories work', async () => {
    await extract(
      await makeTarGz([
        { name: 'ro/', type: 'directory', mode: 0o555 },
        { name: 'ro/f', content: 'f', mode: 0o444 },
      ]),
    );
    expect((await stat(join(dest, 'ro'))).mode & 0o777).toBe(0o555);
    expect(await readFile(join(dest, 'ro', 'f'), 'utf8')).toBe('f');
  });

  const ownedLayer = () =>
    makeTarGz([
      { name: 'd/', type: 'directory', uid: 1234, gid: 5678 },
      { name: 'd/suid', content: 'x', mode: 0o4755, uid: 1234, gid: 5678 },
      { name: 'd/l', type: 'symlink', linkname: 'suid', uid: 1234, gid: 5678 },
    ]);

  it('leaves ownership to the extracting user by default', async () => {
    await extract(await ownedLayer());
    expect((await stat(join(dest, 'd', 'suid'))).uid).toBe(process.getuid?.());
  });

  it('chowns with preserveOwner as root, keeping setuid bits (needs root)', async () => {
    requireRoot('extracting with preserveOwner (chown)');
    await extract(await ownedLayer(), { preserveOwner: true });
    for (const p of ['d', 'd/suid']) {
      const s = await stat(join(dest, p));
      expect([s.uid, s.gid]).toEqual([1234, 5678]);
    }
    expect((await lstat(join(dest, 'd', 'l'))).uid).toBe(1234);
    expect((await stat(join(dest, 'd', 'suid'))).mode & 0o7777).toBe(0o4755);
  });

  it('stops on abort', async () => {
    const ac = new AbortController();
    ac.abort();
    await expect(
      extract(await makeTarGz([{ name: 'f', content: 'f' }]), { signal: ac.signal }),
    ).rejects.toThrow(/abort/i);
  });
});
