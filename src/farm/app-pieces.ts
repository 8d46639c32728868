import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, open, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { gunzipSync, gzipSync } from 'node:zlib';
import { z } from 'zod';
import { type Digest, digestHex, isDigest, sha256Digest } from '../oci/digest.js';
import { PackfarmError } from '../util/errors.js';
import { tempPathFor } from '../util/fs.js';
import { parseJson, parseWith } from '../util/validate.js';
import type { BlobCache } from './blob-cache.js';
import type { BlobSource, NodeConnection } from './client.js';
import { encodeMessage } from './protocol.js';

/**
 * The app travels as content-addressed pieces (spec/node-protocol.md §3), so a rebuild after one file changed
 * sends about that file and not the whole app again.
 *
 * The coordinator writes the app as an uncompressed deterministic tar (its sha256 is the job's `app.digest`)
 * and cuts it at entry boundaries:
 *   - a **piece** is the data of one regular file of PIECE_MIN bytes or more, gzip-compressed (a blob);
 *   - the rest — tar headers, padding, small files, directories, links, the trailer — is **glue**, kept
 *     inline in a **group**: a gzip-compressed JSON list of segments (`{b: base64 glue}` or `{p: piece digest,
 *     n: its uncompressed size}`) covering consecutive entries, cut where an entry's header hashes to a
 *     boundary (content-defined, so inserting a file changes one group, not every group after it);
 *   - the **index** (JSON: the tar's digest and size, the groups in order) names the whole app.
 * Only blobs the node lacks are sent, smallest level last: pieces of the groups the node lacks, then those
 * groups, then the index — so a node holding a group holds its pieces. The node rebuilds the exact tar bytes
 * from them and checks them against `app.digest` before the job uses it; the job is unchanged.
 */
export const PIECE_MIN = 256;
/** A group ends after an entry whose header digest's first byte is below this (about 1 in 32), or … */
const BOUNDARY_BYTE = 8;
/** … once it has this many entries. Groups have at least MIN_GROUP entries. */
const MAX_GROUP = 256;
const MIN_GROUP = 8;
const BLOCK = 512;

const DigestSchema = z.string().refine(isDigest, 'expected sha256:<64 hex>') as unknown as z.ZodType<Digest>;
const BlobRefSchema = z.object({ digest: DigestSchema, size: z.number().int().nonnegative() });

export const AppIndexSchema = z.object({
  /** The uncompressed tar the pieces rebuild. */
  tar: BlobRefSchema,
  groups: z.array(BlobRefSchema),
});
export type AppIndex = z.infer<typeof AppIndexSchema>;

const SegmentSchema = z.union([
  z.object({ b: z.string() }),
  z.object({ p: DigestSchema, n: z.number().int().nonnegative() }),
]);
const GroupSchema = z.object({ s: z.array(SegmentSchema) });
type Segment = z.infer<typeof SegmentSchema>;

/** A group blob and the piece blobs it refers to. */
export interface AppGroup extends BlobSource {
  pieces: BlobSource[];
}

export interface AppPieces {
  /** The index blob. */
  index: BlobSource;
  groups: AppGroup[];
}

/**
 * Cut an uncompressed tar into pieces and groups, written as blobs under `dir` (coordinator side). Nothing
 * here depends on time or machine, so an unchanged file gives the same piece and an unchanged run of entries
 * the same group.
 */
export async function splitAppTar(
  tarPath: string,
  tar: { digest: Digest; size: number },
  dir: string,
): Promise<AppPieces> {
  const blobDir = join(dir, 'app-pieces');
  await mkdir(blobDir, { recursive: true });
  const written = new Map<Digest, BlobSource>();
  const put = async (bytes: Buffer): Promise<BlobSource> => {
    const digest = sha256Digest(bytes);
    let b = written.get(digest);
    if (!b) {
      const path = join(blobDir, digestHex(digest));
      await writeFile(path, bytes);
      b = { digest, size: bytes.length, open: () => createReadStream(path) };
      written.set(digest, b);
    }
    return b;
  };

  const fh = await open(tarPath, 'r');
  try {
    const read = async (pos: number, len: number): Promise<Buffer> => {
      const buf = Buffer.alloc(len);
      let off = 0;
      while (off < len) {
        const { bytesRead } = await fh.read(buf, off, len - off, pos + off);
        if (bytesRead === 0) throw new PackfarmError('INVALID_LAYER', `${tarPath}: the app tar ends early`);
        off += bytesRead;
      }
      return buf;
    };
    const groups: AppGroup[] = [];
    let segments: Segment[] = [];
    let glue: Buffer[] = [];
    let pieces: BlobSource[] = [];
    let entries = 0;
    const flushGlue = () => {
      if (glue.length > 0) segments.push({ b: Buffer.concat(glue).toString('base64') });
      glue = [];
    };
    const closeGroup = async () => {
      flushGlue();
      if (segments.length === 0) return;
      const g = await put(gzipSync(Buffer.from(JSON.stringify({ s: segments })), { level: 9 }));
      groups.push({ ...g, pieces });
      segments = [];
      pieces = [];
      entries = 0;
    };

    let pos = 0;
    let paxSize: number | undefined;
    while (pos < tar.size) {
      const header = await read(pos, Math.min(BLOCK, tar.size - pos));
      pos += header.length;
      glue.push(header);
      if (header.length < BLOCK || header.every((x) => x === 0)) continue; // trailer (or padding to the end)
      const type = String.fromCharCode(header[156] ?? 0);
      const size = paxSize ?? headerSize(header, tarPath);
      paxSize = undefined;
      const padded = Math.ceil(size / BLOCK) * BLOCK;
      if ((type === '0' || type === '\0' || type === '7') && size >= PIECE_MIN) {
        const data = await read(pos, size);
        flushGlue();
        const piece = await put(gzipSync(data, { level: 1 }));
        segments.push({ p: piece.digest, n: size });
        pieces.push(piece);
        if (padded > size) glue.push(Buffer.alloc(padded - size));
      } else {
        const data = await read(pos, padded);
        glue.push(data);
        // A pax header's size record overrides the next entry's header field (files over 8 GiB).
        if (type === 'x') paxSize = paxRecordSize(data.subarray(0, size));
      }
      pos += padded;
      if (type === 'x' || type === 'g') continue; // an extended header belongs with its entry
      entries++;
      const h = createHash('sha256').update(header).digest();
      if ((entries >= MIN_GROUP && (h[0] ?? 255) < BOUNDARY_BYTE) || entries >= MAX_GROUP) await closeGroup();
    }
    await closeGroup();
    const index: AppIndex = {
      tar: { digest: tar.digest, size: tar.size },
      groups: groups.map((g) => ({ digest: g.digest, size: g.size })),
    };
    return { index: await put(Buffer.from(JSON.stringify(index))), groups };
  } finally {
    await fh.close();
  }
}

function headerSize(header: Buffer, where: string): number {
  const field = header.subarray(124, 136);
  if ((field[0]! & 0x80) !== 0) {
    // base-256: big-endian, the first byte's top bit set
    let n = field[0]! & 0x7f;
    for (let i = 1; i < field.length; i++) n = n * 256 + field[i]!;
    return n;
  }
  const text = field.toString('ascii').replace(/\0.*$/s, '').trim();
  const n = text === '' ? 0 : Number.parseInt(text, 8);
  if (!Number.isSafeInteger(n) || n < 0)
    throw new PackfarmError(
      'INVALID_LAYER',
      `${where}: a tar header has a bad size field ${JSON.stringify(text)}`,
    );
  return n;
}

function paxRecordSize(data: Buffer): number | undefined {
  const m = /(?:^|\n)\d+ size=(\d+)\n/.exec(data.toString('utf8'));
  return m ? Number(m[1]) : undefined;
}

/**
 * Node side: the app tar is not in the cache but its index is: rebuild the tar from the groups and pieces in
 * the cache, checked against its digest, published under that digest (temp name, then rename).
 */
export async function assembleApp(
  cache: BlobCache,
  app: { digest: Digest; size: number; index: { digest: Digest; size: number } },
): Promise<void> {
  const blob = async (d: Digest, what: string): Promise<Buffer> => {
    try {
      return await readFile(cache.path(d));
    } catch {
      throw new PackfarmError('BLOB_MISSING', `app ${app.digest}: its ${what} ${d} is not on this node`, {
        hint: 'the coordinator sends it with have/want before the job; it may have been removed meanwhile',
      });
    }
  };
  const where = `app index ${app.index.digest}`;
  const index = parseWith(
    AppIndexSchema,
    parseJson((await blob(app.index.digest, 'index')).toString('utf8'), where),
    where,
    'PROTOCOL_ERROR',
  );
  if (index.tar.digest !== app.digest || index.tar.size !== app.size)
    throw new PackfarmError(
      'PROTOCOL_ERROR',
      `${where} rebuilds ${index.tar.digest}, not the job's app ${app.digest}`,
    );
  const target = cache.path(app.digest);
  const tmp = tempPathFor(target);
  const fh = await open(tmp, 'w');
  const hash = createHash('sha256');
  let size = 0;
  const write = async (b: Buffer) => {
    hash.update(b);
    size += b.length;
    await fh.write(b);
  };
  try {
    for (const g of index.groups) {
      const gw = `app group ${g.digest}`;
      const group = parseWith(
        GroupSchema,
        parseJson(gunzipSync(await blob(g.digest, 'group')).toString('utf8'), gw),
        gw,
        'PROTOCOL_ERROR',
      );
      for (const s of group.s) {
        if ('b' in s) await write(Buffer.from(s.b, 'base64'));
        else {
          const data = gunzipSync(await blob(s.p, 'piece'));
          if (data.length !== s.n)
            throw new PackfarmError(
              'BLOB_DIGEST_MISMATCH',
              `app piece ${s.p}: ${data.length} bytes, expected ${s.n}`,
            );
          await write(data);
        }
      }
    }
    await fh.close();
    const got = `sha256:${hash.digest('hex')}`;
    if (got !== app.digest || size !== app.size)
      throw new PackfarmError(
        'BLOB_DIGEST_MISMATCH',
        `app ${app.digest}: its pieces rebuilt ${got} (${size} bytes, expected ${app.size}): refused`,
      );
    await rename(tmp, target);
  } catch (err) {
    await fh.close().catch(() => {});
    await rm(tmp, { force: true });
    throw err;
  }
}

/**
 * Coordinator side: get the app onto a node, sending only what it lacks (see the module comment). Returns the
 * blobs sent and the bytes that went out for them (blob data and the `have` messages).
 */
export async function sendApp(
  conn: Pick<NodeConnection, 'lacks' | 'ensureBlobs'>,
  app: BlobSource,
  pieces: AppPieces,
): Promise<{ sent: Digest[]; bytes: number }> {
  let bytes = 0;
  const have = (digests: Digest[]) => encodeMessage({ type: 'have', id: 'b0000-000000', digests }).length;
  bytes += have([app.digest]);
  if ((await conn.lacks([app.digest])).length === 0) return { sent: [], bytes };
  const offered = [pieces.index.digest, ...pieces.groups.map((g) => g.digest)];
  bytes += have(offered);
  const lack = new Set(await conn.lacks(offered));
  const groups = pieces.groups.filter((g) => lack.has(g.digest));
  const wantedPieces = [...new Map(groups.flatMap((g) => g.pieces).map((p) => [p.digest, p])).values()];
  const sent: Digest[] = [];
  // Pieces, then their groups, then the index: a node holding a group holds its pieces.
  for (const level of [wantedPieces, groups, lack.has(pieces.index.digest) ? [pieces.index] : []]) {
    if (level.length === 0) continue;
    bytes += have(level.map((b) => b.digest));
    const r = await conn.ensureBlobs(level);
    sent.push(...r.sent);
    bytes += r.bytes;
  }
  return { sent, bytes };
}
