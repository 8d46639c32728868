import { randomBytes } from 'node:crypto';
import { copyFile, mkdir, mkdtemp, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeLayer } from '../archive/index.js';
import { type Digest, digestHex } from '../oci/digest.js';
import { isPackfarmError } from '../util/errors.js';
import { type AppPieces, PIECE_MIN, assembleApp, sendApp, splitAppTar } from './app-pieces.js';
import { openBlobCache } from './blob-cache.js';
import type { BlobSource } from './client.js';

let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'packfarm-app-pieces-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function makeApp(root: string): Promise<void> {
  for (let i = 0; i < 120; i++) {
    const d = join(root, 'src', `pkg${i % 7}`);
    await mkdir(d, { recursive: true });
    await writeFile(join(d, `file${i}.js`), `// file ${i}\n${'x'.repeat(300 + ((i * 97) % 5000))}\n`);
  }
  await writeFile(join(root, 'tiny.txt'), 'tiny\n');
  await writeFile(join(root, 'big.bin'), randomBytes(700_000));
  await symlink('tiny.txt', join(root, 'link'));
  // A name over 100 bytes takes a pax header.
  await writeFile(join(root, `${'n'.repeat(140)}.txt`), 'long name\n'.repeat(80));
}

async function tarOf(app: string, n: number) {
  const out = join(dir, `app-${n}.tar`);
  const r = await writeLayer({ dir: app, out, compression: 'none' });
  const pieces = await splitAppTar(out, { digest: r.digest, size: r.size }, join(dir, `prep-${n}`));
  return { path: out, digest: r.digest, size: r.size, pieces };
}

function allBlobs(p: AppPieces): BlobSource[] {
  return [p.index, ...p.groups, ...p.groups.flatMap((g) => g.pieces)];
}

/** A fake connection over a real node cache: lacks() asks the cache, ensureBlobs() copies what it lacks. */
function nodeConn(cacheDir: string) {
  const cache = openBlobCache(cacheDir);
  let bytes = 0;
  const conn = {
    lacks: async (ds: readonly Digest[]) => {
      const out: Digest[] = [];
      for (const d of ds) if (!(await cache.has(d))) out.push(d);
      return out;
    },
    ensureBlobs: async (blobs: readonly BlobSource[]) => {
      const sent: Digest[] = [];
      let n = 0;
      for (const b of blobs) {
        if (await cache.has(b.digest)) continue;
        const r = cache.receive(b.digest);
        for await (const c of b.open() as AsyncIterable<Buffer>) {
          r.write(c);
          n += c.length;
        }
        await r.end();
        sent.push(b.digest);
      }
      bytes += n;
      return { sent, bytes: n };
    },
  };
  return { cache, conn, bytes: () => bytes };
}

describe('app pieces', () => {
  it('the node rebuilds the exact tar; a changed file sends its piece, its group and the index only', async () => {
    const app = join(dir, 'app');
    await makeApp(app);
    const one = await tarOf(app, 1);
    expect(one.pieces.groups.length).toBeGreaterThan(2);
    const node = nodeConn(join(dir, 'node'));

    const first = await sendApp(node.conn, { ...one, open: () => Buffer.from('') as never }, one.pieces);
    expect(first.sent.length).toBe(new Set(allBlobs(one.pieces).map((b) => b.digest)).size);
    await assembleApp(node.cache, { digest: one.digest, size: one.size, index: one.pieces.index });
    expect((await readFile(node.cache.path(one.digest))).equals(await readFile(one.path))).toBe(true);

    // The same app again: one question, nothing sent.
    const again = await sendApp(node.conn, { ...one, open: () => Buffer.from('') as never }, one.pieces);
    expect(again.sent).toEqual([]);

    // One file changes (same size, other bytes): its piece, the group holding it and the index travel.
    const changed = join(app, 'src', 'pkg3', 'file10.js');
    const text = await readFile(changed, 'utf8');
    await writeFile(changed, text.replace('x', 'y'));
    const two = await tarOf(app, 2);
    expect(two.digest).not.toBe(one.digest);
    const delta = await sendApp(node.conn, { ...two, open: () => Buffer.from('') as never }, two.pieces);
    expect(delta.sent).toHaveLength(3);
    const changedPiece = two.pieces.groups
      .flatMap((g) => g.pieces)
      .find((p) => !one.pieces.groups.some((g) => g.pieces.some((q) => q.digest === p.digest)));
    expect(changedPiece).toBeDefined();
    expect(delta.sent).toContain(changedPiece!.digest);
    expect(delta.sent).toContain(two.pieces.index.digest);
    // Far below the app: about the file (compressed) plus one group.
    expect(delta.bytes).toBeLessThan(20_000);
    expect(one.size).toBeGreaterThan(1_000_000);
    await assembleApp(node.cache, { digest: two.digest, size: two.size, index: two.pieces.index });
    expect((await readFile(node.cache.path(two.digest))).equals(await readFile(two.path))).toBe(true);
  });

  it('a new file changes one group, not every group after it', async () => {
    const app = join(dir, 'app');
    await makeApp(app);
    const one = await tarOf(app, 1);
    await writeFile(join(app, 'src', 'pkg0', 'added.js'), 'a'.repeat(PIECE_MIN + 10));
    const two = await tarOf(app, 2);
    const before = new Set(one.pieces.groups.map((g) => g.digest));
    const fresh = two.pieces.groups.filter((g) => !before.has(g.digest));
    expect(fresh.length).toBeLessThanOrEqual(2);
    expect(two.pieces.groups.length).toBeGreaterThan(2);
  });

  it('refuses pieces that do not rebuild the app', async () => {
    const app = join(dir, 'app');
    await makeApp(app);
    const one = await tarOf(app, 1);
    const node = nodeConn(join(dir, 'node'));
    await sendApp(node.conn, { ...one, open: () => Buffer.from('') as never }, one.pieces);
    // Swap one piece's file for another piece's bytes under its name.
    const pieces = one.pieces.groups.flatMap((g) => g.pieces);
    const [a, b] = [pieces[0]!, pieces.find((p) => p.size !== pieces[0]!.size)!];
    await copyFile(node.cache.path(b.digest), node.cache.path(a.digest));
    let err: unknown;
    try {
      await assembleApp(node.cache, { digest: one.digest, size: one.size, index: one.pieces.index });
    } catch (e) {
      err = e;
    }
    expect(isPackfarmError(err, 'BLOB_DIGEST_MISMATCH')).toBe(true);
    expect(await node.cache.has(one.digest)).toBe(false);
    // A missing group is named.
    const g = one.pieces.groups[0]!;
    await rm(join(dir, 'node', 'sha256', digestHex(g.digest)));
    err = undefined;
    try {
      await assembleApp(node.cache, { digest: one.digest, size: one.size, index: one.pieces.index });
    } catch (e) {
      err = e;
    }
    expect(isPackfarmError(err, 'BLOB_MISSING')).toBe(true);
    expect((err as Error).message).toContain(`its group ${g.digest} is not on this node`);
  });
});
