import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeTestImage, writeTestIndex } from '../../test/helpers/images.js';
import { assertOciValid } from '../../test/helpers/oci-schema.js';
import { MediaType } from '../oci/media-types.js';
import { isPackfarmError } from '../util/errors.js';
import { packfarmDataDir } from './data-dir.js';
import { type LayoutStore, openLayoutStore } from './layout-store.js';
import {
  addToManifestList,
  annotateManifestList,
  createManifestList,
  deleteManifestList,
  inspectManifestList,
  listManifestLists,
  manifestListsDir,
  pushManifestList,
  removeFromManifestList,
} from './manifest-list.js';

let tmp: string;
let srcDir: string;
let src: LayoutStore;
let opts: { dataDir: string };
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-lists-'));
  srcDir = join(tmp, 'src');
  src = await openLayoutStore(srcDir, { create: true });
  opts = { dataDir: join(tmp, 'lists') };
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function codeOf(p: Promise<unknown>): Promise<string | undefined> {
  try {
    await p;
  } catch (err) {
    if (isPackfarmError(err)) return err.code;
    throw err;
  }
  return undefined;
}

describe('packfarm data dir', () => {
  it('is $PACKFARM_HOME, else $XDG_DATA_HOME/packfarm, else ~/.local/share/packfarm', () => {
    expect(packfarmDataDir({ PACKFARM_HOME: '/p', XDG_DATA_HOME: '/x' })).toBe('/p');
    expect(packfarmDataDir({ XDG_DATA_HOME: '/x' })).toBe('/x/packfarm');
    expect(packfarmDataDir({ XDG_DATA_HOME: 'relative' })).toBe(join(homedir(), '.local/share/packfarm'));
    expect(packfarmDataDir({})).toBe(join(homedir(), '.local/share/packfarm'));
    expect(manifestListsDir({ PACKFARM_HOME: '/p' })).toBe('/p/manifests');
  });
});

describe('local manifest lists', () => {
  it('take each image platform from its config and render a valid, order-independent index', async () => {
    await writeTestImage(src, { platform: 'linux/arm64', tag: 'arm64' });
    await writeTestImage(src, { platform: 'linux/amd64', tag: 'amd64' });
    await writeTestImage(src, { platform: 'linux/arm/v7', tag: 'armv7' });
    const images = ['arm64', 'amd64', 'armv7'].map((t) => `oci:${srcDir}:${t}`);

    const a = await createManifestList('example.com/app:1', { ...opts, images });
    expect(a.children.map((c) => c.platform)).toEqual([
      { os: 'linux', architecture: 'arm64' },
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm', variant: 'v7' },
    ]);
    await createManifestList('example.com/app:2', opts);
    for (const image of [...images].reverse()) await addToManifestList('example.com/app:2', image, opts);

    const one = await inspectManifestList('example.com/app:1', opts);
    const two = await inspectManifestList('example.com/app:2', opts);
    expect(two.digest).toBe(one.digest);
    expect(two.bytes.equals(one.bytes)).toBe(true);
    assertOciValid('index', one.bytes);
    expect(one.document.manifests.map((m) => m.platform?.architecture)).toEqual(['amd64', 'arm', 'arm64']);
    expect(await listManifestLists(opts)).toEqual(['example.com/app:1', 'example.com/app:2']);
  });

  it('refuses to create a list twice unless amending', async () => {
    await writeTestImage(src, { tag: 'x' });
    await createManifestList('example.com/app:1', opts);
    expect(await codeOf(createManifestList('example.com/app:1', opts))).toBe('MANIFEST_LIST_EXISTS');
    const amended = await createManifestList('example.com/app:1', {
      ...opts,
      amend: true,
      images: [`oci:${srcDir}:x`],
    });
    expect(amended.children).toHaveLength(1);
    expect(await codeOf(addToManifestList('example.com/other:1', `oci:${srcDir}:x`, opts))).toBe(
      'MANIFEST_LIST_UNKNOWN',
    );
  });

  it('adds every runnable child of an index, and replaces an entry added again', async () => {
    const amd = await writeTestImage(src, { platform: 'linux/amd64' });
    const arm = await writeTestImage(src, { platform: 'linux/arm64' });
    const att = await writeTestImage(src, { platform: { os: 'unknown', architecture: 'unknown' } });
    await writeTestIndex(src, [amd, arm], {
      tag: 'multi',
      extra: [
        {
          mediaType: att.mediaType,
          digest: att.digest,
          size: att.size,
          platform: { os: 'unknown', architecture: 'unknown' },
          annotations: { 'vnd.docker.reference.type': 'attestation-manifest' },
        },
      ],
    });
    await createManifestList('example.com/app:1', opts);
    const { added } = await addToManifestList('example.com/app:1', `oci:${srcDir}:multi`, opts);
    expect(added.map((c) => c.digest).sort()).toEqual([amd.digest, arm.digest].sort());
    expect(
      await codeOf(addToManifestList('example.com/app:1', `oci:${srcDir}:multi`, { ...opts, arch: 'arm64' })),
    ).toBe('INVALID_ARGS');
    // Re-adding one of them as a plain image (with an override) replaces its entry.
    await addToManifestList('example.com/app:1', `oci:${srcDir}@${amd.digest}`, {
      ...opts,
      annotations: { note: 'again' },
    });
    const list = await inspectManifestList('example.com/app:1', opts);
    expect(list.document.manifests).toHaveLength(2);
    expect(list.document.manifests[0]?.annotations).toEqual({ note: 'again' });
  });

  it('annotates entries by the name they were added as or by digest, and refuses ambiguity', async () => {
    const amd = await writeTestImage(src, { platform: 'linux/amd64', tag: 'amd64' });
    const arm = await writeTestImage(src, { platform: 'linux/arm64' });
    await writeTestIndex(src, [amd, arm], { tag: 'multi' });
    await createManifestList('example.com/app:1', { ...opts, images: [`oci:${srcDir}:amd64`] });
    const { entry } = await annotateManifestList('example.com/app:1', `oci:${srcDir}:amd64`, {
      ...opts,
      variant: 'v3',
      annotations: { 'org.opencontainers.image.description': 'fast one' },
    });
    expect(entry.platform).toEqual({ os: 'linux', architecture: 'amd64', variant: 'v3' });
    expect(entry.annotations).toEqual({ 'org.opencontainers.image.description': 'fast one' });

    // Adding the index re-adds amd64 (same digest), which replaces that entry: it is now known by the
    // index's name, which names two entries.
    await addToManifestList('example.com/app:1', `oci:${srcDir}:multi`, opts);
    expect(
      await codeOf(
        annotateManifestList('example.com/app:1', `oci:${srcDir}:multi`, { ...opts, os: 'linux' }),
      ),
    ).toBe('MANIFEST_LIST_ENTRY_AMBIGUOUS');
    expect(await codeOf(annotateManifestList('example.com/app:1', `oci:${srcDir}:amd64`, opts))).toBe(
      'MANIFEST_LIST_ENTRY_UNKNOWN',
    );
    await annotateManifestList('example.com/app:1', arm.digest, { ...opts, arch: 'arm', variant: 'v8' });
    const built = await inspectManifestList('example.com/app:1', opts);
    assertOciValid('index', built.bytes);
    const byDigest = Object.fromEntries(built.document.manifests.map((m) => [m.digest, m]));
    expect(byDigest[arm.digest]?.platform).toEqual({ os: 'linux', architecture: 'arm', variant: 'v8' });
    expect(await codeOf(annotateManifestList('example.com/app:1', 'example.com/nope:1', opts))).toBe(
      'MANIFEST_LIST_ENTRY_UNKNOWN',
    );
  });

  it('removes entries and whole lists', async () => {
    const amd = await writeTestImage(src, { platform: 'linux/amd64', tag: 'amd64' });
    await writeTestImage(src, { platform: 'linux/arm64', tag: 'arm64' });
    await createManifestList('example.com/app:1', {
      ...opts,
      images: [`oci:${srcDir}:amd64`, `oci:${srcDir}:arm64`],
    });
    const { removed } = await removeFromManifestList('example.com/app:1', amd.digest, opts);
    expect(removed.map((c) => c.digest)).toEqual([amd.digest]);
    const { removed: r2 } = await removeFromManifestList('example.com/app:1', `oci:${srcDir}:arm64`, opts);
    expect(r2).toHaveLength(1);
    expect((await inspectManifestList('example.com/app:1', opts)).document.manifests).toEqual([]);
    await deleteManifestList('example.com/app:1', opts);
    expect(await readdir(opts.dataDir)).toEqual([]);
    expect(await codeOf(inspectManifestList('example.com/app:1', opts))).toBe('MANIFEST_LIST_UNKNOWN');
  });

  it('inspects offline: the child manifests and configs are kept locally', async () => {
    await writeTestImage(src, { platform: 'linux/amd64', tag: 'amd64' });
    await createManifestList('example.com/app:1', { ...opts, images: [`oci:${srcDir}:amd64`] });
    await rm(srcDir, { recursive: true });
    const built = await inspectManifestList('example.com/app:1', opts);
    expect(built.document.manifests).toHaveLength(1);
    expect(built.document.manifests[0]?.platform).toEqual({ os: 'linux', architecture: 'amd64' });
  });

  it('pushes children by digest, then the index under the tag; --purge deletes the list', async () => {
    const amd = await writeTestImage(src, { platform: 'linux/amd64', tag: 'amd64' });
    const arm = await writeTestImage(src, { platform: 'linux/arm64', tag: 'arm64' });
    await createManifestList('example.com/app:1', {
      ...opts,
      images: [`oci:${srcDir}:amd64`, `oci:${srcDir}:arm64`],
      annotations: { 'org.opencontainers.image.version': '1' },
    });
    const expected = await inspectManifestList('example.com/app:1', opts);
    const destDir = join(tmp, 'dest');
    const report = await pushManifestList('example.com/app:1', {
      ...opts,
      destination: `oci:${destDir}:v1`,
      purge: true,
    });
    expect(report.digest).toBe(expected.digest);
    expect(report.tag).toBe('v1');
    expect(report.purged).toBe(true);
    expect(report.children.map((c) => c.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    const dest = await openLayoutStore(destDir);
    const pushed = await dest.getManifest('v1');
    expect(pushed.bytes.equals(expected.bytes)).toBe(true);
    expect(pushed.mediaType).toBe(MediaType.ociIndex);
    for (const img of [amd, arm]) {
      expect((await dest.getManifest(img.digest)).bytes.equals(img.bytes)).toBe(true);
      for (const l of img.layers) expect(await dest.hasBlob(l.digest)).toBe(true);
    }
    expect(await listManifestLists(opts)).toEqual([]);
  });

  it('refuses a Docker list of OCI images, and pushes one of Docker images', async () => {
    await writeTestImage(src, { platform: 'linux/amd64', tag: 'oci' });
    await writeTestImage(src, { platform: 'linux/arm64', tag: 'docker', docker: true });
    await createManifestList('example.com/app:1', { ...opts, images: [`oci:${srcDir}:oci`] });
    expect(
      await codeOf(
        pushManifestList('example.com/app:1', {
          ...opts,
          destination: `oci:${join(tmp, 'd')}:x`,
          format: 'docker',
        }),
      ),
    ).toBe('INDEX_FORMAT_MISMATCH');
    await createManifestList('example.com/app:2', {
      ...opts,
      format: 'docker',
      images: [`oci:${srcDir}:docker`],
    });
    const r = await pushManifestList('example.com/app:2', {
      ...opts,
      destination: `oci:${join(tmp, 'd')}:x`,
    });
    expect(r.mediaType).toBe(MediaType.dockerManifestList);
    expect(await codeOf(pushManifestList('example.com/app:3', opts))).toBe('MANIFEST_LIST_UNKNOWN');
  });

  it('keeps its state in a layout holding the rendered index', async () => {
    await writeTestImage(src, { platform: 'linux/amd64', tag: 'amd64' });
    const list = await createManifestList('example.com/app:1', { ...opts, images: [`oci:${srcDir}:amd64`] });
    const layout = await openLayoutStore(list.dir);
    const rendered = await layout.getManifest('index');
    expect(rendered.digest).toBe((await inspectManifestList('example.com/app:1', opts)).digest);
    expect(list.dir).toBe(join(opts.dataDir, encodeURIComponent('example.com/app:1')));
  });
});
