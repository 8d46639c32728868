import { spawn } from 'node:child_process';
import { mkdtemp, readdir, readFile, rm, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { afterAll, afterEach, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { compileSrcForChildProcesses } from '../../test/helpers/compiled-src.js';
import { writeTestImage, writeTestIndex } from '../../test/helpers/images.js';
import { assertOciValid, ociSchemaErrors } from '../../test/helpers/oci-schema.js';
import { sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { isPackfarmError } from '../util/errors.js';
import { REF_NAME_ANNOTATION, openLayoutStore } from './layout-store.js';
import { withFileLock } from '../util/lock.js';

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-layout-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const readJson = async (p: string) => JSON.parse(await readFile(p, 'utf8'));
const stream = (s: string | Buffer) => () => Readable.from([Buffer.from(s)]);
async function drain(r: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of r) chunks.push(c as Buffer);
  return Buffer.concat(chunks);
}
async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    if (isPackfarmError(err)) return err.code;
    throw err;
  }
  return undefined;
}

describe('OCI layout store', () => {
  it('creates a valid, empty layout and refuses a missing one without create', async () => {
    const dir = join(tmp, 'new');
    expect(await codeOf(openLayoutStore(dir))).toBe('LAYOUT_NOT_FOUND');
    await openLayoutStore(dir, { create: true });
    const layout = await readJson(join(dir, 'oci-layout'));
    expect(layout).toEqual({ imageLayoutVersion: '1.0.0' });
    assertOciValid('layout', layout);
    assertOciValid('index', await readJson(join(dir, 'index.json')));
    expect(await readdir(join(dir, 'blobs'))).toEqual(['sha256']);
  });

  it('will not turn an unrelated non-empty directory into a layout', async () => {
    await writeFile(join(tmp, 'notes.txt'), 'mine');
    expect(await codeOf(openLayoutStore(tmp, { create: true }))).toBe('LAYOUT_NOT_EMPTY');
  });

  it('refuses a regular file at, or above, the layout path with an error naming it', async () => {
    const file = join(tmp, 'cache.tar');
    await writeFile(file, 'not a layout');
    for (const create of [true, false]) {
      const err = await openLayoutStore(file, { create }).catch((e: unknown) => e);
      expect(isPackfarmError(err, 'LAYOUT_NOT_A_DIRECTORY'), String(err)).toBe(true);
      expect((err as Error).message).toBe(`oci:${file} is a file, not an OCI image layout directory`);
      const below = await openLayoutStore(join(file, 'a', 'b'), { create }).catch((e: unknown) => e);
      expect(isPackfarmError(below, 'LAYOUT_NOT_A_DIRECTORY'), String(below)).toBe(true);
      expect((below as Error).message).toBe(
        `oci:${join(file, 'a', 'b')} cannot be a layout directory: ${file} is a file`,
      );
    }
    expect(await readFile(file, 'utf8')).toBe('not a layout');
  });

  it('names the file when oci-layout or index.json is invalid', async () => {
    const dir = join(tmp, 'bad');
    await openLayoutStore(dir, { create: true });
    await writeFile(join(dir, 'index.json'), '{"schemaVersion":2,"manifests":[{"digest":"nope"}]}');
    const store = await openLayoutStore(dir);
    await expect(store.listTags()).rejects.toThrowError(/index\.json: invalid content: manifests\[0\]/);
    await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"2.0.0"}');
    await expect(openLayoutStore(dir)).rejects.toThrowError(
      /oci-layout: invalid content: imageLayoutVersion/,
    );
  });

  it('stores blobs by digest, verifies them, and skips existing ones without opening the source', async () => {
    const store = await openLayoutStore(join(tmp, 'l'), { create: true });
    const data = 'some layer bytes';
    const digest = sha256Digest(data);
    expect(await store.putBlob({ digest, size: data.length, open: stream(data) })).toEqual({
      digest,
      size: data.length,
      outcome: 'uploaded',
    });
    let opened = false;
    const again = await store.putBlob({
      digest,
      size: data.length,
      open: () => {
        opened = true;
        return Readable.from([Buffer.from(data)]);
      },
    });
    expect(again.outcome).toBe('exists');
    expect(opened).toBe(false);
    expect((await drain(await store.getBlob(digest))).toString()).toBe(data);
    // Unknown digest: computed while streaming.
    const other = await store.putBlob({ open: stream('other') });
    expect(other.digest).toBe(sha256Digest('other'));
    expect(await store.hasBlob(other.digest)).toBe(true);
  });

  it('rejects a blob whose bytes do not match the digest and leaves nothing behind', async () => {
    const dir = join(tmp, 'l');
    const store = await openLayoutStore(dir, { create: true });
    const digest = sha256Digest('expected');
    expect(await codeOf(store.putBlob({ digest, open: stream('something else') }))).toBe(
      'BLOB_DIGEST_MISMATCH',
    );
    expect(await codeOf(store.putBlob({ digest: sha256Digest('x'), size: 5, open: stream('x') }))).toBe(
      'BLOB_SIZE_MISMATCH',
    );
    expect(await readdir(join(dir, 'blobs', 'sha256'))).toEqual([]);
    expect(await store.hasBlob(digest)).toBe(false);
  });

  it('fails reading a corrupted blob', async () => {
    const dir = join(tmp, 'l');
    const store = await openLayoutStore(dir, { create: true });
    const { digest } = await store.putBlob({ open: stream('good content') });
    await writeFile(store.blobPath(digest), 'bad content!');
    await expect(drain(await store.getBlob(digest))).rejects.toThrowError(/hashes to/);
    expect(await codeOf(store.getBlob(sha256Digest('absent')))).toBe('BLOB_UNKNOWN');
  });

  it('tags manifests, replaces a moved tag, resolves by tag or digest, and lists tags', async () => {
    const dir = join(tmp, 'l');
    const store = await openLayoutStore(dir, { create: true });
    const a = await writeTestImage(store, { platform: 'linux/amd64', tag: 'v1' });
    const b = await writeTestImage(store, { platform: 'linux/arm64', tag: 'v2' });
    expect(await store.listTags()).toEqual(['v1', 'v2']);
    expect((await store.resolve('v1'))?.digest).toBe(a.digest);
    expect((await store.resolve(b.digest))?.mediaType).toBe(MediaType.ociManifest);
    expect(await store.resolve('nope')).toBeUndefined();
    expect(await codeOf(store.getManifest('nope'))).toBe('MANIFEST_UNKNOWN');

    await store.putManifest({ bytes: b.bytes, mediaType: b.mediaType, tag: 'v1' });
    expect((await store.resolve('v1'))?.digest).toBe(b.digest);
    const index = await readJson(join(dir, 'index.json'));
    assertOciValid('index', index);
    // a lost its only tag; it is still readable by digest.
    expect(
      index.manifests.map(
        (m: { annotations?: Record<string, string> }) => m.annotations?.[REF_NAME_ANNOTATION],
      ),
    ).toEqual(['v1', 'v2']);
    const got = await store.getManifest(a.digest);
    expect(got.bytes.equals(a.bytes)).toBe(true);
    assertOciValid('manifest', got.bytes);
    expect(await store.removeTag('v2')).toBe(true);
    expect(await store.removeTag('v2')).toBe(false);
    expect(await store.listTags()).toEqual(['v1']);
  });

  it('keeps manifests pushed by digest reachable until an index references them', async () => {
    const dir = join(tmp, 'l');
    const store = await openLayoutStore(dir, { create: true });
    const amd = await writeTestImage(store, { platform: 'linux/amd64' });
    const arm = await writeTestImage(store, { platform: 'linux/arm64' });
    let entries = await store.entries();
    expect(entries.map((e) => e.digest).sort()).toEqual([amd.digest, arm.digest].sort());
    expect(entries.every((e) => e.annotations === undefined)).toBe(true);
    const idx = await writeTestIndex(store, [amd, arm], { tag: 'multi' });
    entries = await store.entries();
    expect(entries).toEqual([
      {
        mediaType: MediaType.ociIndex,
        digest: idx.digest,
        size: idx.bytes.length,
        annotations: { [REF_NAME_ANNOTATION]: 'multi' },
      },
    ]);
    assertOciValid('index', idx.bytes);
  });

  it('refuses a manifest whose blobs are missing, or whose mediaType disagrees', async () => {
    const store = await openLayoutStore(join(tmp, 'l'), { create: true });
    const cfg = sha256Digest('{}');
    const bytes = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: cfg, size: 2 },
        layers: [],
      }),
    );
    expect(await codeOf(store.putManifest({ bytes, mediaType: MediaType.ociManifest }))).toBe(
      'MANIFEST_BLOB_UNKNOWN',
    );
    await store.putBlob({ open: stream('{}') });
    expect(await codeOf(store.putManifest({ bytes, mediaType: MediaType.dockerManifest }))).toBe(
      'MANIFEST_INVALID',
    );
    expect(await codeOf(store.putManifest({ bytes, mediaType: MediaType.ociManifest, tag: 'bad tag' }))).toBe(
      'INVALID_TAG',
    );
    await store.putManifest({ bytes, mediaType: MediaType.ociManifest, tag: 'ok' });
  });

  it('loses no tag when many writers put at once in one process', async () => {
    const dir = join(tmp, 'l');
    const stores = await Promise.all(Array.from({ length: 4 }, () => openLayoutStore(dir, { create: true })));
    const base = await writeTestImage(stores[0]!, {});
    await Promise.all(
      Array.from({ length: 24 }, (_, i) =>
        stores[i % stores.length]!.putManifest({
          bytes: base.bytes,
          mediaType: base.mediaType,
          tag: `t${i}`,
        }),
      ),
    );
    const tags = await stores[0]!.listTags();
    expect(tags).toHaveLength(24);
    assertOciValid('index', await readJson(join(dir, 'index.json')));
  });

  describe('across processes', () => {
    let compiled: { dir: string; cleanup: () => Promise<void> };
    // Transpiling src/ for the child processes takes a while on a loaded machine.
    beforeAll(async () => {
      compiled = await compileSrcForChildProcesses();
    }, 180_000);
    afterAll(async () => {
      await compiled?.cleanup();
    });

    it('loses no tag when 4 processes write tags into one layout at once', async () => {
      const dir = join(tmp, 'shared');
      const store = await openLayoutStore(dir, { create: true });
      const img = await writeTestImage(store, {});
      const script = `
        const { openLayoutStore } = await import(${JSON.stringify(join(compiled.dir, 'image', 'layout-store.js'))});
        const [dir, prefix, digest] = process.argv.slice(1);
        const store = await openLayoutStore(dir, { create: true });
        const m = await store.getManifest(digest);
        // Each process also writes its own blob, so blob writes race too.
        await store.putBlob({ open: () => (async function* () { yield Buffer.from('blob of ' + prefix); })() });
        for (let i = 0; i < 10; i++) await store.putManifest({ bytes: m.bytes, mediaType: m.mediaType, tag: prefix + '-' + i });
      `;
      const run = (prefix: string) =>
        new Promise<void>((resolve, reject) => {
          const child = spawn(
            process.execPath,
            ['--input-type=module', '-e', script, dir, prefix, img.digest],
            {
              stdio: ['ignore', 'inherit', 'pipe'],
            },
          );
          let err = '';
          child.stderr.on('data', (d) => {
            err += d;
          });
          child.on('error', reject);
          child.on('exit', (code) =>
            code === 0 ? resolve() : reject(new Error(`child ${prefix} exited ${code}: ${err}`)),
          );
        });
      await Promise.all(['p0', 'p1', 'p2', 'p3'].map(run));
      const tags = await store.listTags();
      expect(tags).toHaveLength(40);
      for (const p of ['p0', 'p1', 'p2', 'p3'])
        for (let i = 0; i < 10; i++) expect(tags).toContain(`${p}-${i}`);
      assertOciValid('index', await readJson(join(dir, 'index.json')));
      for (const p of ['p0', 'p1', 'p2', 'p3'])
        expect(await store.hasBlob(sha256Digest(`blob of ${p}`))).toBe(true);
      // No lock or temp file left behind (the uploads' scratch dir stays, empty).
      expect((await readdir(dir)).sort()).toEqual(['.packfarm-tmp', 'blobs', 'index.json', 'oci-layout']);
      expect(await readdir(join(dir, '.packfarm-tmp'))).toEqual([]);
      expect((await readdir(join(dir, 'blobs', 'sha256'))).filter((f) => f.startsWith('.'))).toEqual([]);
    });
  });
});

describe('file lock', () => {
  it('takes over a lock left by a dead process', async () => {
    const lock = join(tmp, 'x.lock');
    await mkdir(tmp, { recursive: true });
    // pid 2^22+1 is above Linux's pid_max default, so no such process exists.
    await writeFile(
      lock,
      JSON.stringify({ pid: 4194305, host: (await import('node:os')).hostname(), token: 'old' }),
    );
    expect(await withFileLock(lock, async () => 'ran', { timeoutMs: 5_000 })).toBe('ran');
    await expect(readFile(lock)).rejects.toThrow();
  });

  it('gives up with a clear error while a live owner holds it', async () => {
    const lock = join(tmp, 'x.lock');
    await writeFile(
      lock,
      JSON.stringify({ pid: process.pid, host: (await import('node:os')).hostname(), token: 'live' }),
    );
    const err = await withFileLock(lock, async () => 'ran', { timeoutMs: 200 }).catch((e: unknown) => e);
    expect(isPackfarmError(err, 'LOCK_TIMEOUT')).toBe(true);
    expect((err as Error).message).toContain(lock);
    // The live owner's lock is untouched.
    expect(JSON.parse(await readFile(lock, 'utf8')).token).toBe('live');
  });

  it('serializes tasks of one process', async () => {
    const lock = join(tmp, 'y.lock');
    let inside = 0;
    let maxInside = 0;
    await Promise.all(
      Array.from({ length: 10 }, () =>
        withFileLock(lock, async () => {
          inside++;
          maxInside = Math.max(maxInside, inside);
          await new Promise((r) => setImmediate(r));
          inside--;
        }),
      ),
    );
    expect(maxInside).toBe(1);
  });
});

describe('OCI schema helper', () => {
  it('rejects what the spec rejects', () => {
    expect(ociSchemaErrors('index', { schemaVersion: 2, manifests: [{ digest: 'x', size: 1 }] })).not.toEqual(
      [],
    );
    expect(ociSchemaErrors('layout', { imageLayoutVersion: '2.0.0' })).not.toEqual([]);
    expect(ociSchemaErrors('manifest', { schemaVersion: 2, config: {}, layers: [] })).not.toEqual([]);
  });
});
