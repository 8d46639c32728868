import { execFileSync } from 'node:child_process';
import { truncateSync } from 'node:fs';
import { createHash } from 'node:crypto';
import {
  chmod,
  link,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  symlink,
  utimes,
  writeFile,
} from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { gunzipSync } from 'node:zlib';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { listTar } from '../../test/fixtures/archive/tars.js';
import { isPackfarmError } from '../util/errors.js';
import { type MemoryEntry, type SkippedEntry, writeLayer, writeLayerFromEntries } from './layer-writer.js';

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-layer-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** A small tree with the interesting cases; `stamp` varies file times so that determinism is really tested. */
async function makeTree(root: string, stamp: Date): Promise<void> {
  await mkdir(join(root, 'bin'), { recursive: true });
  await mkdir(join(root, 'a-b'), { recursive: true });
  await mkdir(join(root, 'a', 'deep'), { recursive: true });
  await mkdir(join(root, 'sticky'), { recursive: true });
  await writeFile(join(root, 'bin', 'run'), '#!/bin/sh\necho hi\n');
  await chmod(join(root, 'bin', 'run'), 0o4755);
  await writeFile(join(root, 'a', 'x'), 'x');
  await writeFile(join(root, 'a0'), 'a0');
  await writeFile(join(root, 'a-b', 'y'), 'y');
  await writeFile(join(root, 'secret'), 'shh');
  await chmod(join(root, 'secret'), 0o600);
  await chmod(join(root, 'sticky'), 0o1777);
  await writeFile(join(root, 'big.bin'), Buffer.alloc(3 * 1024 * 1024 + 7, 'z'));
  await symlink('/etc/passwd', join(root, 'abs-link'));
  await symlink('../a0', join(root, 'a', 'rel-link'));
  await symlink('does/not/exist', join(root, 'dangling'));
  await link(join(root, 'a', 'x'), join(root, 'hard-x'));
  for (const p of ['bin/run', 'a/x', 'a0', 'secret', 'big.bin', 'a', 'bin', '']) {
    await utimes(join(root, p), stamp, stamp);
  }
}

async function layerBytes(opts: Parameters<typeof writeLayer>[0]): Promise<Buffer> {
  await writeLayer(opts);
  return readFile(opts.out as string);
}

describe('writeLayer', () => {
  it('returns digests of the blob and the tar, sizes and the entry count', async () => {
    await makeTree(join(tmp, 'src'), new Date('2020-05-05T00:00:00Z'));
    const out = join(tmp, 'out', 'layer.tgz');
    const r = await writeLayer({ dir: join(tmp, 'src'), out });
    const blob = await readFile(out);
    const tar = gunzipSync(blob);
    expect(r.digest).toBe(sha256(blob));
    expect(r.size).toBe(blob.length);
    expect(r.diffId).toBe(sha256(tar));
    expect(r.uncompressedSize).toBe(tar.length);
    expect(r.entries).toBe((await listTar(blob)).length);
    // Nothing but the blob is left beside it (the temp file was renamed).
    expect(await readdir(join(tmp, 'out'))).toEqual(['layer.tgz']);
  });

  it('is byte-for-byte deterministic across runs and across copies with other timestamps', async () => {
    await makeTree(join(tmp, 'one'), new Date('2020-05-05T00:00:00Z'));
    await makeTree(join(tmp, 'two'), new Date('2023-01-02T03:04:05Z'));
    const a = await layerBytes({ dir: join(tmp, 'one'), out: join(tmp, 'a.tgz') });
    const b = await layerBytes({ dir: join(tmp, 'one'), out: join(tmp, 'b.tgz') });
    const c = await layerBytes({ dir: join(tmp, 'two'), out: join(tmp, 'c.tgz') });
    expect(b.equals(a)).toBe(true);
    expect(c.equals(a)).toBe(true);
  });

  it('orders entries bytewise with each directory right before its contents', async () => {
    await makeTree(join(tmp, 'src'), new Date());
    await writeFile(join(tmp, 'src', 'B'), 'upper');
    await writeFile(join(tmp, 'src', 'é'), 'e-acute');
    const names = (await listTar(await layerBytes({ dir: join(tmp, 'src'), out: join(tmp, 'l.tgz') }))).map(
      (e) => e.name,
    );
    expect(names).toEqual([
      'B',
      'a/',
      'a/deep/',
      'a/rel-link',
      'a/x',
      'a-b/',
      'a-b/y',
      'a0',
      'abs-link',
      'big.bin',
      'bin/',
      'bin/run',
      'dangling',
      'hard-x',
      'secret',
      'sticky/',
      'é',
    ]);
  });

  it('keeps permission bits and symlink targets, stores hardlinks once, blanks owner names', async () => {
    await makeTree(join(tmp, 'src'), new Date());
    const entries = await listTar(await layerBytes({ dir: join(tmp, 'src'), out: join(tmp, 'l.tgz') }));
    const by = new Map(entries.map((e) => [e.name, e]));
    expect(by.get('bin/run')?.mode).toBe(0o4755);
    expect(by.get('secret')?.mode).toBe(0o600);
    expect(by.get('sticky/')?.mode).toBe(0o1777);
    expect(by.get('abs-link')).toMatchObject({ type: 'symlink', linkname: '/etc/passwd', mode: 0o777 });
    expect(by.get('a/rel-link')).toMatchObject({ type: 'symlink', linkname: '../a0' });
    expect(by.get('dangling')).toMatchObject({ type: 'symlink', linkname: 'does/not/exist' });
    // a/x comes first in walk order, so it holds the content and hard-x points at it.
    expect(by.get('a/x')).toMatchObject({ type: 'file', size: 1 });
    expect(by.get('hard-x')).toMatchObject({ type: 'link', linkname: 'a/x', size: 0 });
    expect(by.get('big.bin')?.content.equals(Buffer.alloc(3 * 1024 * 1024 + 7, 'z'))).toBe(true);
    for (const e of entries) expect([e.uid, e.gid, e.uname, e.gname]).toEqual([0, 0, '', '']);
  });

  it('applies uid, gid and mtime to every entry (default mtime 1980-01-01T00:00:01Z)', async () => {
    await makeTree(join(tmp, 'src'), new Date());
    const dflt = await listTar(await layerBytes({ dir: join(tmp, 'src'), out: join(tmp, 'd.tgz') }));
    expect(new Set(dflt.map((e) => e.mtime))).toEqual(new Set([315532801]));
    const when = new Date('2024-02-29T12:00:00Z');
    const custom = await listTar(
      await layerBytes({ dir: join(tmp, 'src'), out: join(tmp, 'c.tgz'), uid: 1000, gid: 1001, mtime: when }),
    );
    for (const e of custom) expect([e.uid, e.gid, e.mtime]).toEqual([1000, 1001, when.getTime() / 1000]);
  });

  it('places entries under a prefix, emitting its parent directories first', async () => {
    await mkdir(join(tmp, 'src'));
    await chmod(join(tmp, 'src'), 0o750);
    await writeFile(join(tmp, 'src', 'f'), 'f');
    const entries = await listTar(
      await layerBytes({ dir: join(tmp, 'src'), out: join(tmp, 'l.tgz'), prefix: '/layers/my_bp/node/' }),
    );
    expect(entries.map((e) => [e.name, e.type, e.mode.toString(8)])).toEqual([
      ['layers/', 'directory', '755'],
      ['layers/my_bp/', 'directory', '755'],
      ['layers/my_bp/node/', 'directory', '750'],
      ['layers/my_bp/node/f', 'file', '644'],
    ]);
  });

  it('writes names longer than 100 and 255 bytes, and long link targets', async () => {
    const d1 = 'd'.repeat(120);
    const d2 = 'e'.repeat(140);
    const f = 'f'.repeat(200);
    await mkdir(join(tmp, 'src', d1, d2), { recursive: true });
    await writeFile(join(tmp, 'src', d1, d2, f), 'deep');
    await symlink('t'.repeat(180), join(tmp, 'src', d1, 'l'));
    const entries = await listTar(
      await layerBytes({ dir: join(tmp, 'src'), out: join(tmp, 'l.tgz'), prefix: 'workspace' }),
    );
    const file = entries.find((e) => e.type === 'file');
    expect(file?.name).toBe(`workspace/${d1}/${d2}/${f}`);
    expect(file?.content.toString()).toBe('deep');
    expect(entries.find((e) => e.type === 'symlink')?.linkname).toBe('t'.repeat(180));
  });

  it('filters paths; a filtered directory drops its subtree', async () => {
    await makeTree(join(tmp, 'src'), new Date());
    const seen: string[] = [];
    const entries = await listTar(
      await layerBytes({
        dir: join(tmp, 'src'),
        out: join(tmp, 'l.tgz'),
        filter: (rel, stats) => {
          seen.push(rel);
          return !(rel === 'a' && stats.isDirectory()) && rel !== 'secret';
        },
      }),
    );
    const names = entries.map((e) => e.name);
    expect(names).not.toContain('a/');
    expect(names).not.toContain('a/x');
    expect(names).not.toContain('secret');
    expect(names).toContain('a-b/y');
    expect(seen).not.toContain('a/x'); // never walked into
    // The hardlink's first name was filtered out, so hard-x carries the content itself.
    expect(entries.find((e) => e.name === 'hard-x')).toMatchObject({ type: 'file', size: 1 });
  });

  it('leaves out sockets and fifos and reports each', async () => {
    await mkdir(join(tmp, 'src'));
    await writeFile(join(tmp, 'src', 'keep'), 'k');
    execFileSync('mkfifo', [join(tmp, 'src', 'pipe')]);
    const server = createServer();
    await new Promise<void>((resolve) => server.listen(join(tmp, 'src', 'sock'), resolve));
    try {
      const skipped: SkippedEntry[] = [];
      const entries = await listTar(
        await layerBytes({ dir: join(tmp, 'src'), out: join(tmp, 'l.tgz'), onSkip: (s) => skipped.push(s) }),
      );
      expect(entries.map((e) => e.name)).toEqual(['keep']);
      expect(skipped.map((s) => [s.path, s.kind])).toEqual([
        ['pipe', 'fifo'],
        ['sock', 'socket'],
      ]);
    } finally {
      await new Promise((r) => server.close(r));
    }
  });

  it('writes the same bytes to a stream as to a file', async () => {
    await makeTree(join(tmp, 'src'), new Date());
    const file = await layerBytes({ dir: join(tmp, 'src'), out: join(tmp, 'l.tgz') });
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(c: Buffer, _e, cb) {
        chunks.push(c);
        cb();
      },
    });
    const r = await writeLayer({ dir: join(tmp, 'src'), out: sink });
    expect(Buffer.concat(chunks).equals(file)).toBe(true);
    expect(r.digest).toBe(sha256(file));
    expect(sink.writableFinished).toBe(true);
  });

  it("writes a plain tar with compression 'none' (digest = diffId)", async () => {
    await makeTree(join(tmp, 'src'), new Date());
    const r = await writeLayer({ dir: join(tmp, 'src'), out: join(tmp, 'l.tar'), compression: 'none' });
    const tar = await readFile(join(tmp, 'l.tar'));
    expect(r.digest).toBe(r.diffId);
    expect(r.digest).toBe(sha256(tar));
    expect(r.size).toBe(tar.length);
    const gz = await writeLayer({ dir: join(tmp, 'src'), out: join(tmp, 'l.tgz') });
    expect(gz.diffId).toBe(r.diffId);
  });

  it('leaves nothing behind when it fails or is aborted', async () => {
    await makeTree(join(tmp, 'src'), new Date());
    await mkdir(join(tmp, 'out'));
    const failing = writeLayer({
      dir: join(tmp, 'src'),
      out: join(tmp, 'out', 'l.tgz'),
      filter: (rel) => {
        if (rel === 'bin/run') throw new Error('filter exploded');
        return true;
      },
    });
    await expect(failing).rejects.toThrow('filter exploded');
    const ac = new AbortController();
    ac.abort();
    await expect(
      writeLayer({ dir: join(tmp, 'src'), out: join(tmp, 'out', 'l.tgz'), signal: ac.signal }),
    ).rejects.toThrow(/abort/i);
    expect(await readdir(join(tmp, 'out'))).toEqual([]);
  });

  it.each([
    ['a small file', 'secret'],
    ['a streamed large file', 'big.bin'],
  ])('fails with LAYER_SOURCE_CHANGED when %s shrinks while the layer is written', async (_what, victim) => {
    await makeTree(join(tmp, 'src'), new Date());
    const err = await writeLayer({
      dir: join(tmp, 'src'),
      out: join(tmp, 'l.tgz'),
      // The filter runs after lstat and before the read: the header will announce the old size.
      filter: (rel) => {
        if (rel === victim) truncateSync(join(tmp, 'src', victim), 1);
        return true;
      },
    }).catch((e: unknown) => e);
    expect(isPackfarmError(err, 'LAYER_SOURCE_CHANGED')).toBe(true);
    expect((err as Error).message).toContain(join(tmp, 'src', victim));
    expect(await readdir(tmp)).toEqual(['src']);
  });

  it('names the missing source directory', async () => {
    const err = await writeLayer({ dir: join(tmp, 'nope'), out: join(tmp, 'l.tgz') }).catch(
      (e: unknown) => e,
    );
    expect(isPackfarmError(err, 'LAYER_SOURCE_MISSING')).toBe(true);
    expect((err as Error).message).toContain(join(tmp, 'nope'));
  });

  it('refuses to write the layer inside its own source', async () => {
    await mkdir(join(tmp, 'src'));
    const err = await writeLayer({ dir: join(tmp, 'src'), out: join(tmp, 'src', 'l.tgz') }).catch(
      (e: unknown) => e,
    );
    expect(isPackfarmError(err, 'LAYER_OUTPUT_INSIDE_SOURCE')).toBe(true);
    expect(await readdir(join(tmp, 'src'))).toEqual([]);
  });

  it('refuses a prefix with ".."', async () => {
    await mkdir(join(tmp, 'src'));
    await expect(
      writeLayer({ dir: join(tmp, 'src'), out: join(tmp, 'l.tgz'), prefix: 'a/../b' }),
    ).rejects.toThrow(/prefix/);
  });
});

describe('writeLayerFromEntries', () => {
  const entries: MemoryEntry[] = [
    { path: 'cnb/process/web', type: 'symlink', linkname: '../lifecycle/launcher' },
    { path: 'cnb/lifecycle/launcher', type: 'file', mode: 0o755, content: Buffer.from('#!/bin/sh\n') },
    { path: 'etc/config.toml', type: 'file', content: 'a = 1\n' },
    { path: 'cnb', type: 'dir', mode: 0o750 },
  ];

  it('sorts entries, adds missing parents and ignores input order', async () => {
    const a = await writeLayerFromEntries(entries, { out: join(tmp, 'a.tgz') });
    const b = await writeLayerFromEntries([...entries].reverse(), { out: join(tmp, 'b.tgz') });
    expect(b.digest).toBe(a.digest);
    const listed = await listTar(await readFile(join(tmp, 'a.tgz')));
    expect(listed.map((e) => [e.name, e.type, e.mode.toString(8)])).toEqual([
      ['cnb/', 'directory', '750'],
      ['cnb/lifecycle/', 'directory', '755'],
      ['cnb/lifecycle/launcher', 'file', '755'],
      ['cnb/process/', 'directory', '755'],
      ['cnb/process/web', 'symlink', '777'],
      ['etc/', 'directory', '755'],
      ['etc/config.toml', 'file', '644'],
    ]);
    expect(a.entries).toBe(7);
  });

  it('gives the same bytes as writeLayer on the equivalent tree', async () => {
    const root = join(tmp, 'tree');
    await mkdir(join(root, 'cnb', 'lifecycle'), { recursive: true });
    await mkdir(join(root, 'cnb', 'process'), { recursive: true });
    await mkdir(join(root, 'etc'), { recursive: true });
    await writeFile(join(root, 'cnb', 'lifecycle', 'launcher'), '#!/bin/sh\n');
    await chmod(join(root, 'cnb', 'lifecycle', 'launcher'), 0o755);
    await symlink('../lifecycle/launcher', join(root, 'cnb', 'process', 'web'));
    await writeFile(join(root, 'etc', 'config.toml'), 'a = 1\n');
    for (const d of ['cnb/lifecycle', 'cnb/process', 'etc']) await chmod(join(root, d), 0o755);
    await chmod(join(root, 'cnb'), 0o750);
    await chmod(join(root, 'etc', 'config.toml'), 0o644);
    // With a prefix the tree root becomes 'x/' carrying the root's mode; implied directories are 0755.
    await chmod(root, 0o755);
    const fromDisk = await writeLayer({ dir: root, out: join(tmp, 'disk.tgz'), prefix: 'x', uid: 5, gid: 6 });
    const fromMemory = await writeLayerFromEntries(entries, {
      out: join(tmp, 'mem.tgz'),
      prefix: 'x',
      uid: 5,
      gid: 6,
    });
    expect(fromMemory.digest).toBe(fromDisk.digest);
    expect(fromMemory.entries).toBe(fromDisk.entries);
  });

  it('applies per-entry owners and compression none', async () => {
    const r = await writeLayerFromEntries([{ path: 'f', type: 'file', content: 'x', uid: 1000, gid: 1000 }], {
      out: join(tmp, 'l.tar'),
      compression: 'none',
      uid: 7,
    });
    expect(r.digest).toBe(r.diffId);
    const [e] = await listTar(await readFile(join(tmp, 'l.tar')));
    expect([e?.uid, e?.gid]).toEqual([1000, 1000]);
  });

  it('refuses duplicates, ".." and files with children', async () => {
    const code = async (list: MemoryEntry[]) =>
      writeLayerFromEntries(list, { out: join(tmp, 'x.tgz') }).then(
        () => undefined,
        (err: unknown) => (isPackfarmError(err) ? err.code : String(err)),
      );
    expect(
      await code([
        { path: 'a', type: 'file' },
        { path: '/a', type: 'file' },
      ]),
    ).toBe('INVALID_LAYER_ENTRY');
    expect(await code([{ path: 'a/../../b', type: 'file' }])).toBe('INVALID_LAYER_ENTRY');
    expect(
      await code([
        { path: 'a', type: 'file' },
        { path: 'a/b', type: 'file' },
      ]),
    ).toBe('INVALID_LAYER_ENTRY');
    expect(await code([{ path: 'l', type: 'symlink' }])).toBe('INVALID_LAYER_ENTRY');
  });
  it('streams file bytes from disk (source) and writes hard links after their file, as writeLayer does', async () => {
    const root = join(tmp, 'hl');
    await mkdir(join(root, 'bin'), { recursive: true });
    await writeFile(join(root, 'bin', 'a'), 'same bytes\n');
    await chmod(join(root, 'bin', 'a'), 0o4755);
    await link(join(root, 'bin', 'a'), join(root, 'bin', 'b'));
    await chmod(join(root, 'bin'), 0o755);
    const fromDisk = await writeLayer({ dir: root, out: join(tmp, 'disk.tgz') });
    const blob = join(tmp, 'bytes');
    await writeFile(blob, 'same bytes\n');
    const fromEntries = await writeLayerFromEntries(
      [
        { path: 'bin/b', type: 'link', linkname: 'bin/a', mode: 0o4755 },
        { path: 'bin/a', type: 'file', mode: 0o4755, source: { path: blob, size: 11 } },
      ],
      { out: join(tmp, 'entries.tgz') },
    );
    expect(fromEntries.digest).toBe(fromDisk.digest);
    const listed = await listTar(await readFile(join(tmp, 'entries.tgz')));
    expect(listed.map((e) => [e.name, e.type, e.mode.toString(8)])).toEqual([
      ['bin/', 'directory', '755'],
      ['bin/a', 'file', '4755'],
      ['bin/b', 'link', '4755'],
    ]);
  });

  it('refuses a hard link whose file is missing or sorts after it', async () => {
    const code = async (list: MemoryEntry[]) =>
      writeLayerFromEntries(list, { out: join(tmp, 'x.tgz') }).then(
        () => undefined,
        (err: unknown) => (isPackfarmError(err) ? err.code : String(err)),
      );
    expect(await code([{ path: 'a', type: 'link', linkname: 'nothing' }])).toBe('INVALID_LAYER_ENTRY');
    expect(
      await code([
        { path: 'a', type: 'link', linkname: 'b' },
        { path: 'b', type: 'file', content: 'x' },
      ]),
    ).toBe('INVALID_LAYER_ENTRY');
  });
});
