import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTestImage } from '../../test/helpers/images.js';
import { MediaType } from '../oci/media-types.js';
import { isPackfarmError } from '../util/errors.js';
import { type LayoutStore, openLayoutStore } from './layout-store.js';
import { publishImages, publishIndex } from './publish-index.js';

let dir: string;
let store: LayoutStore;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'publish-index-'));
  store = await openLayoutStore(join(dir, 'layout'), { create: true });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('publishIndex', () => {
  it('takes each child platform from its config, sorts children, and tags the index', async () => {
    const arm = await writeTestImage(store, { platform: 'linux/arm64/v8', files: { a: 'arm' } });
    const amd = await writeTestImage(store, { platform: 'linux/amd64', files: { a: 'amd' } });
    const armv7 = await writeTestImage(store, { platform: 'linux/arm/v7', files: { a: 'v7' } });
    const p = await publishIndex({ store, images: [arm.digest, armv7.digest, amd.digest], tags: ['1'] });
    expect(p.mediaType).toBe(MediaType.ociIndex);
    expect(p.document.manifests.map((m) => [m.platform?.architecture, m.platform?.variant])).toEqual([
      ['amd64', undefined],
      ['arm', 'v7'],
      ['arm64', undefined],
    ]);
    expect(p.written).toEqual(['1']);
    expect((await store.resolve('1'))?.digest).toBe(p.digest);

    // Another order gives the same bytes; a tag already naming them is not written again.
    const again = await publishIndex({
      store,
      images: [amd.digest, arm.digest, armv7.digest],
      tags: ['1', '2'],
    });
    expect(again.digest).toBe(p.digest);
    expect(again.written).toEqual(['2']);
  });

  it('writes a Docker manifest list from Docker images, and refuses a list of OCI ones', async () => {
    const a = await writeTestImage(store, { platform: 'linux/amd64', docker: true, files: { d: '1' } });
    const b = await writeTestImage(store, { platform: 'linux/s390x', docker: true, files: { d: '2' } });
    const p = await publishIndex({ store, images: [b.digest, a.digest], tags: ['docker'], format: 'docker' });
    expect(p.mediaType).toBe(MediaType.dockerManifestList);
    const oci = await writeTestImage(store, { platform: 'linux/amd64', files: { d: '3' } });
    const err = await publishIndex({ store, images: [oci.digest], tags: ['x'], format: 'docker' }).catch(
      (e) => e,
    );
    expect(isPackfarmError(err, 'INDEX_FORMAT_MISMATCH')).toBe(true);
    expect(await store.resolve('x')).toBeUndefined();
  });

  it('refuses a child that is not an image manifest, naming it', async () => {
    const img = await writeTestImage(store, { platform: 'linux/amd64', files: { e: '1' } });
    const idx = await publishIndex({ store, images: [img.digest], tags: [] });
    const err = await publishIndex({ store, images: [idx.digest], tags: ['nested'] }).catch((e) => e);
    expect(isPackfarmError(err, 'MANIFEST_INVALID')).toBe(true);
    expect(err.message).toContain(idx.digest);
    // Without tags the index is stored by digest only.
    expect((await store.resolve(idx.digest))?.digest).toBe(idx.digest);
  });

  it('publishImages tags one image as it is, several as an index, and rewrites no tag already right', async () => {
    const one = await writeTestImage(store, { platform: 'linux/arm64', files: { f: 'one' } });
    const p = await publishImages({ store, images: [one.digest], tags: ['single'] });
    expect(p.digest).toBe(one.digest);
    expect(p.index).toBeUndefined();
    expect(p.mediaType).toBe(MediaType.ociManifest);
    expect(p.children.map((c) => c.platform)).toEqual([{ os: 'linux', architecture: 'arm64' }]);
    expect(p.written).toEqual(['single']);
    expect((await store.resolve('single'))?.digest).toBe(one.digest);
    expect((await publishImages({ store, images: [one.digest], tags: ['single'] })).written).toEqual([]);

    const two = await writeTestImage(store, { platform: 'linux/amd64', files: { f: 'two' } });
    const both = await publishImages({ store, images: [one.digest, two.digest], tags: ['single'] });
    expect(both.mediaType).toBe(MediaType.ociIndex);
    expect(both.index?.document.manifests.map((m) => m.digest)).toEqual([two.digest, one.digest]);
    expect(both.written).toEqual(['single']);
    expect((await store.resolve('single'))?.digest).toBe(both.digest);

    // One "image" that is an index is refused, naming it, and the tag stays.
    const err = await publishImages({ store, images: [both.digest], tags: ['single'] }).catch((e) => e);
    expect(isPackfarmError(err, 'MANIFEST_INVALID')).toBe(true);
    expect(err.message).toContain(both.digest);
    expect((await store.resolve('single'))?.digest).toBe(both.digest);
  });
});
