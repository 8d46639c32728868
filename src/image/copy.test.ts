import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeTestImage, writeTestIndex } from '../../test/helpers/images.js';
import { assertOciValid } from '../../test/helpers/oci-schema.js';
import { sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { hostPlatform, parsePlatform } from '../oci/platform.js';
import { isPackfarmError } from '../util/errors.js';
import { type CopyEvent, copyImage } from './copy.js';
import { type LayoutStore, openLayoutStore } from './layout-store.js';
import type { ImageStore } from './store.js';

let tmp: string;
let src: LayoutStore;
let dst: LayoutStore;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-copy-'));
  src = await openLayoutStore(join(tmp, 'src'), { create: true });
  dst = await openLayoutStore(join(tmp, 'dst'), { create: true });
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function multiArch(store: ImageStore, tag = 'multi') {
  const amd = await writeTestImage(store, {
    platform: 'linux/amd64',
    layers: [{ 'a.txt': 'shared\n' }, { 'b.txt': 'amd\n' }],
  });
  const arm = await writeTestImage(store, {
    platform: 'linux/arm64',
    layers: [{ 'a.txt': 'shared\n' }, { 'b.txt': 'arm\n' }],
  });
  const v7 = await writeTestImage(store, { platform: 'linux/arm/v7' });
  const attestation = await writeTestImage(store, { platform: { os: 'unknown', architecture: 'unknown' } });
  const index = await writeTestIndex(store, [amd, arm, v7], {
    tag,
    extra: [
      {
        mediaType: attestation.mediaType,
        digest: attestation.digest,
        size: attestation.size,
        platform: { os: 'unknown', architecture: 'unknown' },
        annotations: {
          'vnd.docker.reference.type': 'attestation-manifest',
          'vnd.docker.reference.digest': amd.digest,
        },
      },
    ],
  });
  return { amd, arm, v7, attestation, index };
}

describe('copyImage', () => {
  it('copies one image byte for byte and writes the tag', async () => {
    const img = await writeTestImage(src, {
      platform: 'linux/amd64',
      tag: 'v1',
      layers: [{ a: '1' }, { b: '2' }],
    });
    const events: CopyEvent[] = [];
    const report = await copyImage({
      src,
      srcTarget: 'v1',
      dst,
      dstTag: 'copied',
      onProgress: (e) => events.push(e),
    });
    expect(report.digest).toBe(img.digest);
    expect(report.tag).toBe('copied');
    expect(report.blobs).toEqual({ exists: 0, mounted: 0, uploaded: 3 });
    expect(report.bytesUploaded).toBe(
      img.config.bytes.length + img.layers.reduce((n, l) => n + l.gz.length, 0),
    );
    expect(report.manifests).toEqual({ pushed: 1, exists: 0 });
    const got = await dst.getManifest('copied');
    expect(got.bytes.equals(img.bytes)).toBe(true);
    // The manifest comes after all of its blobs, and is the last event.
    expect(events.at(-1)).toMatchObject({ type: 'manifest', digest: img.digest, tag: 'copied' });
    expect(await dst.listTags()).toEqual(['copied']);
  });

  it('stops when its signal is aborted (an interrupted copy), before writing the tag', async () => {
    await writeTestImage(src, { platform: 'linux/amd64', tag: 'v1' });
    const ac = new AbortController();
    ac.abort(new Error('interrupted'));
    await expect(copyImage({ src, srcTarget: 'v1', dst, dstTag: 'copy', signal: ac.signal })).rejects.toThrow(
      'interrupted',
    );
    expect(await dst.resolve('copy')).toBeUndefined();
  });

  it('skips what is already there on a second copy', async () => {
    await writeTestImage(src, { tag: 'v1' });
    await copyImage({ src, srcTarget: 'v1', dst, dstTag: 'v1' });
    const again = await copyImage({ src, srcTarget: 'v1', dst, dstTag: 'v2' });
    expect(again.blobs.uploaded).toBe(0);
    expect(again.manifests).toEqual({ pushed: 0, exists: 1 });
    expect(await dst.listTags()).toEqual(['v1', 'v2']);
  });

  it('with --all copies every child, then the index, keeping the index digest', async () => {
    const { amd, arm, v7, attestation, index } = await multiArch(src);
    const events: CopyEvent[] = [];
    const report = await copyImage({
      src,
      srcTarget: 'multi',
      dst,
      dstTag: 'multi',
      all: true,
      onProgress: (e) => events.push(e),
    });
    expect(report.digest).toBe(index.digest);
    expect(report.mediaType).toBe(MediaType.ociIndex);
    expect(report.manifests.pushed).toBe(5);
    expect(report.images.map((i) => i.digest).sort()).toEqual(
      [amd.digest, arm.digest, v7.digest, attestation.digest].sort(),
    );
    // The shared layer is copied once.
    const shared = amd.layers[0]!.digest;
    expect(arm.layers[0]!.digest).toBe(shared);
    expect(events.filter((e) => e.type === 'blob' && e.digest === shared)).toHaveLength(1);
    // Children before the index; the index (with its tag) last.
    const manifestOrder = events.filter((e) => e.type === 'manifest').map((e) => e.digest);
    expect(manifestOrder.at(-1)).toBe(index.digest);
    const got = await dst.getManifest('multi');
    expect(got.bytes.equals(index.bytes)).toBe(true);
    for (const d of [amd, arm, v7])
      expect((await dst.getManifest(d.digest)).bytes.equals(d.bytes)).toBe(true);
    // Only the tagged index is listed in index.json: its children hang off it.
    const indexJson = JSON.parse(await readFile(join(dst.dir, 'index.json'), 'utf8'));
    assertOciValid('index', indexJson);
    expect(indexJson.manifests).toHaveLength(1);
  });

  it('without --all picks the host platform (or the given one) and copies that image only', async () => {
    const { amd, arm, v7, index } = await multiArch(src);
    const host = await copyImage({ src, srcTarget: 'multi', dst, dstTag: 'host' });
    const expected = hostPlatform().architecture === 'arm64' ? arm : amd;
    expect(host.digest).toBe(expected.digest);
    expect(host.selectedFrom).toEqual({
      index: index.digest,
      platforms: [expect.any(String)],
      filtered: false,
    });

    const r = await copyImage({
      src,
      srcTarget: 'multi',
      dst,
      dstTag: 'armv7',
      platforms: [parsePlatform('linux/arm/v7')],
    });
    expect(r.digest).toBe(v7.digest);
    expect(r.images).toEqual([{ digest: v7.digest, platform: 'linux/arm/v7' }]);
    expect((await dst.resolve('armv7'))?.mediaType).toBe(MediaType.ociManifest);
    expect(await dst.hasBlob(arm.layers[1]!.digest)).toBe(expected === arm);
  });

  it('falls back to a compatible platform and says what exists when nothing fits', async () => {
    const { v7 } = await multiArch(src);
    const r = await copyImage({ src, srcTarget: 'multi', dst, platforms: [parsePlatform('linux/arm/v8')] });
    expect(r.selectedFrom?.platforms).toEqual(['linux/arm/v8']);
    expect(r.digest).toBe(v7.digest);
    const err = await copyImage({
      src,
      srcTarget: 'multi',
      dst,
      platforms: [parsePlatform('linux/s390x')],
    }).catch((e: unknown) => e);
    expect(isPackfarmError(err, 'NO_MATCHING_PLATFORM')).toBe(true);
    expect((err as Error).message).toMatch(/linux\/amd64, linux\/arm64, linux\/arm\/v7/);
  });

  it('with several platforms writes a new index holding only those', async () => {
    const { amd, v7, index } = await multiArch(src);
    const r = await copyImage({
      src,
      srcTarget: 'multi',
      dst,
      dstTag: 'two',
      platforms: [parsePlatform('linux/arm/v7'), parsePlatform('linux/amd64')],
    });
    expect(r.selectedFrom?.filtered).toBe(true);
    expect(r.digest).not.toBe(index.digest);
    const got = await dst.getManifest('two');
    expect(sha256Digest(got.bytes)).toBe(r.digest);
    const doc = JSON.parse(got.bytes.toString());
    expect(doc.manifests.map((m: { digest: string }) => m.digest)).toEqual([amd.digest, v7.digest]);
    assertOciValid('index', doc);
  });

  it('copies a Docker manifest list with --all unchanged', async () => {
    const amd = await writeTestImage(src, { platform: 'linux/amd64', docker: true });
    const arm = await writeTestImage(src, { platform: 'linux/arm64', docker: true });
    const list = await writeTestIndex(src, [amd, arm], { tag: 'list', docker: true });
    const r = await copyImage({ src, srcTarget: 'list', dst, dstTag: 'list', all: true });
    expect(r.mediaType).toBe(MediaType.dockerManifestList);
    expect((await dst.getManifest('list')).bytes.equals(list.bytes)).toBe(true);
  });

  it('fails cleanly when a source blob is corrupt, leaving the destination tag unwritten', async () => {
    const img = await writeTestImage(src, { tag: 'v1' });
    const { writeFile } = await import('node:fs/promises');
    await writeFile(src.blobPath(img.layers[0]!.digest), 'garbage');
    const err = await copyImage({ src, srcTarget: 'v1', dst, dstTag: 'v1' }).catch((e: unknown) => e);
    expect(isPackfarmError(err)).toBe(true);
    expect((err as Error).message).toMatch(/hashes to/);
    expect(await dst.listTags()).toEqual([]);
    expect(await dst.hasBlob(img.layers[0]!.digest)).toBe(false);
  });
});
