import { createReadStream } from 'node:fs';
import { chmod, link, mkdir, mkdtemp, readFile, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractLayer, writeLayer } from '../../src/archive/index.js';
import { isPackfarmError } from '../../src/util/errors.js';
import { makeTarGz } from '../fixtures/archive/tars.js';

/**
 * Layers written by packfarm, read by GNU tar and gzip; layers written by GNU tar and tar-stream (hostile ones
 * included), unpacked by packfarm.
 */
let tmp: string;
let src: string;

const LONG_DIR = 'd'.repeat(110);
const LONG_FILE = `${'f'.repeat(120)}.txt`;
const VERY_LONG = `${LONG_DIR}/${'e'.repeat(100)}/${'g'.repeat(60)}`; // > 255 bytes with the file name

async function sh(cmd: string, args: string[], opts: { cwd?: string } = {}) {
  return execa(cmd, args, { ...opts, encoding: 'utf8', stripFinalNewline: false });
}

beforeAll(async () => {
  for (const tool of ['tar', 'gzip', 'sha256sum', 'cp', 'touch', 'find']) {
    const which = await execa('sh', ['-c', `command -v ${tool}`], { reject: false });
    if (which.exitCode !== 0)
      throw new Error(`${tool} is required: apt-get install -y tar gzip coreutils findutils`);
  }
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-archive-it-'));
  src = join(tmp, 'src');
  await mkdir(join(src, LONG_DIR), { recursive: true });
  await mkdir(join(src, VERY_LONG), { recursive: true });
  await mkdir(join(src, 'bin'));
  await mkdir(join(src, 'private'));
  await writeFile(join(src, 'bin', 'start'), '#!/bin/sh\nexec node server.js\n');
  await chmod(join(src, 'bin', 'start'), 0o755);
  await writeFile(join(src, 'private', 'key'), 'secret');
  await chmod(join(src, 'private', 'key'), 0o600);
  await chmod(join(src, 'private'), 0o700);
  await writeFile(join(src, LONG_DIR, LONG_FILE), 'long\n');
  await writeFile(join(src, VERY_LONG, 'leaf.txt'), 'very long\n');
  await writeFile(join(src, 'naïve résumé.txt'), 'unicode\n');
  await writeFile(join(src, 'data.bin'), Buffer.alloc(5 * 1024 * 1024 + 3, 0xab));
  await symlink('bin/start', join(src, 'start-link'));
  await symlink(`/${'t'.repeat(150)}/target`, join(src, 'long-target-link'));
  await link(join(src, 'bin', 'start'), join(src, 'start-hard'));
  await link(join(src, LONG_DIR, LONG_FILE), join(src, 'long-hard'));
});

afterAll(async () => {
  if (tmp) await rm(tmp, { recursive: true, force: true });
});

/** Name, type, mode and link target of every path below root, as find(1) sees them. */
async function findListing(root: string): Promise<string[]> {
  const r = await sh('find', ['.', '-mindepth', '1', '-printf', '%P|%y|%m|%l\\n'], { cwd: root });
  return r.stdout.split('\n').filter(Boolean).sort();
}

describe('layers read by GNU tar and gzip', () => {
  let layer: string;
  let result: Awaited<ReturnType<typeof writeLayer>>;
  beforeAll(async () => {
    layer = join(tmp, 'layer.tgz');
    result = await writeLayer({ dir: src, out: layer, uid: 1000, gid: 1001 });
  });

  it('gzip -t passes; digest and diffId match sha256sum of the blob and of gunzip -c', async () => {
    await sh('gzip', ['-t', layer]);
    const blobSum = (await sh('sha256sum', [layer])).stdout.split(' ')[0];
    const tarSum = (await execa('sh', ['-c', `gunzip -c "${layer}" | sha256sum`])).stdout.split(' ')[0];
    const tarSize = (await execa('sh', ['-c', `gunzip -c "${layer}" | wc -c`])).stdout.trim();
    expect(result.digest).toBe(`sha256:${blobSum}`);
    expect(result.diffId).toBe(`sha256:${tarSum}`);
    expect(result.size).toBe((await readFile(layer)).length);
    expect(result.uncompressedSize).toBe(Number(tarSize));
  });

  it('tar -tvzf lists every entry with its mode, numeric owner, link and long name, without warnings', async () => {
    const r = await sh('tar', ['--numeric-owner', '-tvzf', layer]);
    expect(r.stderr).toBe('');
    const lines = r.stdout.split('\n').filter(Boolean);
    expect(lines).toHaveLength(result.entries);
    const line = (name: string) => lines.find((l) => l.includes(` ${name}`)) ?? '';
    expect(line('bin/start')).toMatch(/^-rwxr-xr-x 1000\/1001 +\d+ 1980-01-01 00:00 bin\/start$/);
    expect(line('private/key')).toMatch(/^-rw------- 1000\/1001 /);
    expect(line('private/')).toMatch(/^drwx------ /);
    expect(line('start-link')).toMatch(/ start-link -> bin\/start$/);
    expect(line('long-target-link')).toContain(` long-target-link -> /${'t'.repeat(150)}/target`);
    expect(line('start-hard')).toMatch(/^h.* start-hard link to bin\/start$/);
    expect(line('long-hard')).toContain(` long-hard link to ${LONG_DIR}/${LONG_FILE}`);
    expect(lines.some((l) => l.endsWith(` ${VERY_LONG}/leaf.txt`))).toBe(true);
    expect(lines.some((l) => l.endsWith(' naïve résumé.txt'))).toBe(true);
  });

  it('tar -xzf reproduces the tree, and tar --compare finds no difference', async () => {
    const out = join(tmp, 'gnu-extract');
    await mkdir(out);
    await sh('tar', ['-xzf', layer, '-C', out]);
    expect(await findListing(out)).toEqual(await findListing(src));
    const diff = await execa('diff', ['-r', '--no-dereference', src, out], { reject: false });
    expect(diff.stdout).toBe('');
    const ino = async (p: string) => (await sh('stat', ['-c', '%i', p])).stdout.trim();
    expect(await ino(join(out, 'start-hard'))).toBe(await ino(join(out, 'bin', 'start')));

    // --compare also checks mtimes and owners: give a copy of the source the layer's.
    const copy = join(tmp, 'compare-src');
    await sh('cp', ['-a', src, copy]);
    await sh('find', [copy, '-exec', 'touch', '-h', '-d', '@315532801', '{}', '+']);
    const sameOwner = await writeLayer({ dir: copy, out: join(tmp, 'compare.tgz') });
    expect(sameOwner.diffId).not.toBe(result.diffId); // owner differs from the 1000/1001 layer
    const cmp = await execa('tar', ['--compare', '-zf', join(tmp, 'compare.tgz'), '-C', copy], {
      reject: false,
    });
    expect(cmp.stdout + cmp.stderr).toBe('');
    expect(cmp.exitCode).toBe(0);
  });

  it('GNU tar reads PAX uid/gid beyond the USTAR range', async () => {
    const big = await writeLayer({
      dir: join(src, 'bin'),
      out: join(tmp, 'bigids.tgz'),
      uid: 3_000_000,
      gid: 4_000_000,
    });
    expect(big.entries).toBe(1);
    const r = await sh('tar', ['--numeric-owner', '-tvzf', join(tmp, 'bigids.tgz')]);
    expect(r.stdout).toMatch(/^-rwxr-xr-x 3000000\/4000000 /);
  });

  it('is deterministic across a cp -a copy of the tree and a re-run', async () => {
    const copy = join(tmp, 'copy-a');
    await sh('cp', ['-a', src, copy]);
    await sh('touch', [join(copy, 'bin', 'start')]);
    const again = await writeLayer({ dir: src, out: join(tmp, 'again.tgz'), uid: 1000, gid: 1001 });
    const copied = await writeLayer({ dir: copy, out: join(tmp, 'copy.tgz'), uid: 1000, gid: 1001 });
    expect(again.digest).toBe(result.digest);
    expect(copied.digest).toBe(result.digest);
    const a = await readFile(layer);
    expect((await readFile(join(tmp, 'copy.tgz'))).equals(a)).toBe(true);
  });
});

describe('extracting layers made by GNU tar', () => {
  async function gnuLayer(name: string, files: Record<string, string>, dirs: string[] = []): Promise<string> {
    const root = join(tmp, `gnu-${name}`);
    await mkdir(root);
    for (const d of dirs) await mkdir(join(root, d), { recursive: true });
    for (const [p, content] of Object.entries(files)) {
      await mkdir(join(root, p, '..'), { recursive: true });
      await writeFile(join(root, p), content);
    }
    const out = join(tmp, `${name}.tgz`);
    await sh('tar', ['--sort=name', '-czf', out, '-C', root, '.']);
    return out;
  }

  it('applies whiteouts and opaque directories across two layers, per OCI', async () => {
    const lower = await gnuLayer('lower', {
      'etc/app.conf': 'old',
      'etc/keep.conf': 'keep',
      'var/cache/a': 'a',
      'var/cache/sub/b': 'b',
      'tmp/junk': 'junk',
    });
    const upper = await gnuLayer('upper', {
      'etc/.wh.app.conf': '',
      '.wh.tmp': '',
      'var/cache/.wh..wh..opq': '',
      'var/cache/fresh': 'fresh',
    });
    const dest = join(tmp, 'rootfs');
    for (const l of [lower, upper]) await extractLayer({ source: createReadStream(l), dest });
    expect(await findListing(dest)).toEqual([
      'etc/keep.conf|f|644|',
      'etc|d|755|',
      'var/cache/fresh|f|644|',
      'var/cache|d|755|',
      'var|d|755|',
    ]);
  });
});

describe('hostile layers', () => {
  const hostile: Array<[string, Parameters<typeof makeTarGz>[0], string]> = [
    ['traversal', [{ name: '../x', content: 'x' }], '"../x"'],
    [
      'symlink then write-through',
      [
        { name: 'link', type: 'symlink', linkname: '__SENTINEL__' },
        { name: 'link/evil', content: 'evil' },
      ],
      '"link/evil"',
    ],
    ['hardlink to /etc/passwd', [{ name: 'pw', type: 'link', linkname: '/etc/passwd' }], '"pw"'],
    ['hardlink to ../x', [{ name: 'up', type: 'link', linkname: '../x' }], '"up"'],
    ['char device', [{ name: 'dev/null', type: 'character-device', devmajor: 1, devminor: 3 }], '"dev/null"'],
  ];

  it.each(hostile)(
    '%s is refused, naming the entry; nothing appears outside dest',
    async (_what, entries, named) => {
      const sentinel = await mkdtemp(join(tmp, 'sentinel-'));
      const dest = join(sentinel, 'dest');
      const fixed = entries.map((e) => (e.linkname === '__SENTINEL__' ? { ...e, linkname: sentinel } : e));
      const err = await extractLayer({ source: Readable.from([await makeTarGz(fixed)]), dest }).catch(
        (e: unknown) => e,
      );
      expect(isPackfarmError(err, 'UNSAFE_LAYER_ENTRY')).toBe(true);
      expect((err as Error).message).toContain(named);
      expect(await readdir(sentinel)).toEqual(['dest']);
    },
  );

  it('an absolute name is placed inside dest, as GNU tar does', async () => {
    const sentinel = await mkdtemp(join(tmp, 'sentinel-'));
    const dest = join(sentinel, 'dest');
    const marker = `packfarm-abs-${process.pid}`;
    await extractLayer({
      source: Readable.from([await makeTarGz([{ name: `/tmp/${marker}`, content: 'x' }])]),
      dest,
    });
    expect(await readFile(join(dest, 'tmp', marker), 'utf8')).toBe('x');
    await expect(readFile(join('/tmp', marker))).rejects.toThrow(/ENOENT/);
    expect(await readdir(sentinel)).toEqual(['dest']);
  });
});
