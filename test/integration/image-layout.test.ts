import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyImage } from '../../src/image/copy.js';
import { inspectImage } from '../../src/image/inspect.js';
import { type LayoutStore, openLayoutStore } from '../../src/image/layout-store.js';
import { type Digest, sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { canonicalJson } from '../../src/util/json.js';
import { writeTestImage, writeTestIndex } from '../helpers/images.js';
import { assertOciValid } from '../helpers/oci-schema.js';
import { privatePodman } from '../helpers/podman.js';

/**
 * OCI layouts written by packfarm, read by skopeo, umoci and podman; and layouts written by skopeo, read by
 * packfarm. The image's layers are made with the system tar and gzip, as a user's would be.
 */
let tmp: string;
let ours: LayoutStore;
let image: { digest: Digest; bytes: Buffer; diffIds: Digest[]; layerDigests: Digest[] };

async function cliLayer(
  files: Record<string, string>,
): Promise<{ gz: Buffer; digest: Digest; diffId: Digest }> {
  const root = await mkdtemp(join(tmp, 'layer-'));
  for (const [path, content] of Object.entries(files)) {
    await mkdir(join(root, path, '..'), { recursive: true });
    await writeFile(join(root, path), content);
  }
  const tar = await execa(
    'tar',
    [
      '--sort=name',
      '--mtime=@315532801',
      '--owner=0',
      '--group=0',
      '--numeric-owner',
      '-C',
      root,
      '-cf',
      '-',
      '.',
    ],
    { encoding: 'buffer' },
  );
  const gz = await execa('gzip', ['-n', '-c'], { input: tar.stdout, encoding: 'buffer' });
  const raw = Buffer.from(tar.stdout);
  const gzBytes = Buffer.from(gz.stdout);
  return { gz: gzBytes, digest: sha256Digest(gzBytes), diffId: sha256Digest(raw) };
}

async function writeCliImage(store: LayoutStore, tag: string) {
  const layers = [
    await cliLayer({ 'etc/greeting': 'hello from packfarm\n' }),
    await cliLayer({ 'app/run.sh': '#!/bin/sh\necho hi\n', 'app/data/x.txt': 'x\n' }),
  ];
  const config = {
    architecture: 'amd64',
    os: 'linux',
    created: '1980-01-01T00:00:01Z',
    config: {
      Env: ['PATH=/usr/bin:/bin', 'GREETING=hi'],
      Entrypoint: ['/app/run.sh'],
      Labels: { 'io.packfarm.test': 'yes' },
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map(() => ({ created: '1980-01-01T00:00:01Z', created_by: 'test' })),
  };
  assertOciValid('config', config);
  const cfg = Buffer.from(canonicalJson(config));
  await store.putBlob({ open: () => Readable.from([cfg]) });
  for (const l of layers)
    await store.putBlob({ digest: l.digest, size: l.gz.length, open: () => Readable.from([l.gz]) });
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256Digest(cfg), size: cfg.length },
    layers: layers.map((l) => ({ mediaType: MediaType.ociLayerGzip, digest: l.digest, size: l.gz.length })),
  };
  assertOciValid('manifest', manifest);
  const bytes = Buffer.from(canonicalJson(manifest));
  const digest = await store.putManifest({ bytes, mediaType: MediaType.ociManifest, tag });
  return { digest, bytes, diffIds: layers.map((l) => l.diffId), layerDigests: layers.map((l) => l.digest) };
}

async function skopeoInspect(args: string[]) {
  const r = await execa('skopeo', ['inspect', ...args]);
  return r.stdout;
}

beforeAll(async () => {
  // Lower-case only: podman names an image pulled from oci:DIR after DIR.
  tmp = join(tmpdir(), `packfarm-layout-it-${process.pid}-${Date.now().toString(36)}`);
  await mkdir(tmp);
  ours = await openLayoutStore(join(tmp, 'ours'), { create: true });
  image = await writeCliImage(ours, 'v1');
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('layouts written by packfarm', () => {
  it('are valid per the OCI schemas', async () => {
    assertOciValid('layout', JSON.parse(await readFile(join(ours.dir, 'oci-layout'), 'utf8')));
    assertOciValid('index', JSON.parse(await readFile(join(ours.dir, 'index.json'), 'utf8')));
  });

  it('are read by skopeo inspect', async () => {
    const info = JSON.parse(await skopeoInspect([`oci:${ours.dir}:v1`]));
    expect(info.Digest).toBe(image.digest);
    expect(info.Architecture).toBe('amd64');
    expect(info.Os).toBe('linux');
    expect(info.Layers).toEqual(image.layerDigests);
    expect(info.Env).toContain('GREETING=hi');
    expect(info.Labels).toEqual({ 'io.packfarm.test': 'yes' });
    expect(Buffer.from(await skopeoInspect(['--raw', `oci:${ours.dir}:v1`])).equals(image.bytes)).toBe(true);
  });

  it('are copied by skopeo to another layout with the same digests, which packfarm reads back', async () => {
    const other = join(tmp, 'skopeo-copy');
    await execa('skopeo', ['copy', `oci:${ours.dir}:v1`, `oci:${other}:copied`]);
    const theirs = await openLayoutStore(other);
    expect(await theirs.listTags()).toEqual(['copied']);
    const m = await theirs.getManifest('copied');
    expect(m.digest).toBe(image.digest);
    expect(m.bytes.equals(image.bytes)).toBe(true);
    const { inspection } = await inspectImage(theirs, 'copied');
    expect(inspection).toMatchObject({ kind: 'image', platform: 'linux/amd64', layers: [{}, {}] });
    expect(inspection.kind === 'image' && inspection.config.entrypoint).toEqual(['/app/run.sh']);
  });

  it('are unpacked by umoci --rootless', async () => {
    const bundle = join(tmp, 'bundle');
    await execa('umoci', ['unpack', '--rootless', '--image', `${ours.dir}:v1`, bundle]);
    expect(await readFile(join(bundle, 'rootfs', 'etc', 'greeting'), 'utf8')).toBe('hello from packfarm\n');
    expect(await readFile(join(bundle, 'rootfs', 'app', 'data', 'x.txt'), 'utf8')).toBe('x\n');
    const runtime = JSON.parse(await readFile(join(bundle, 'config.json'), 'utf8'));
    expect(runtime.process.args).toEqual(['/app/run.sh']);
  });

  it('are pulled by podman with the same layers', async () => {
    const name = `localhost/packfarm-layout-test:${process.pid}`;
    const { podman, cleanup } = await privatePodman();
    try {
      await podman('pull', '-q', `oci:${ours.dir}:v1`);
      const images = await podman('images', '--format', '{{.ID}}');
      const id = images.trim().split('\n')[0]!;
      await podman('tag', id, name);
      const info = JSON.parse(await podman('image', 'inspect', name))[0];
      expect(info.RootFS.Layers).toEqual(image.diffIds);
      expect(info.Architecture).toBe('amd64');
      expect(info.Config.Entrypoint).toEqual(['/app/run.sh']);
    } finally {
      await cleanup();
    }
  });

  it('hold multi-arch indexes that skopeo copies with --all, digest unchanged', async () => {
    const amd = await writeTestImage(ours, { platform: 'linux/amd64' });
    const arm = await writeTestImage(ours, { platform: 'linux/arm64' });
    const index = await writeTestIndex(ours, [amd, arm], { tag: 'multi' });
    const raw = await skopeoInspect(['--raw', `oci:${ours.dir}:multi`]);
    expect(sha256Digest(raw)).toBe(index.digest);
    const other = join(tmp, 'skopeo-all');
    await execa('skopeo', ['copy', '--all', `oci:${ours.dir}:multi`, `oci:${other}:multi`]);
    const theirs = await openLayoutStore(other);
    expect((await theirs.resolve('multi'))?.digest).toBe(index.digest);
    for (const child of [amd, arm])
      expect((await theirs.getManifest(child.digest)).bytes.equals(child.bytes)).toBe(true);
    // skopeo inspect reports the index digest and the config of the host's (amd64) image in it.
    const picked = JSON.parse(await skopeoInspect([`oci:${ours.dir}:multi`]));
    expect(picked.Digest).toBe(index.digest);
    expect(picked.Layers).toEqual(amd.layers.map((l) => l.digest));
  });
});

describe('layouts written by skopeo', () => {
  it('are copied by packfarm into a new layout that skopeo reads again', async () => {
    const theirs = join(tmp, 'from-skopeo');
    await execa('skopeo', ['copy', `oci:${ours.dir}:v1`, `oci:${theirs}:a`]);
    await execa('skopeo', ['copy', `oci:${ours.dir}:multi`, `oci:${theirs}:b`, '--all']);
    const src = await openLayoutStore(theirs);
    expect(await src.listTags()).toEqual(['a', 'b']);
    const dst = await openLayoutStore(join(tmp, 'roundtrip'), { create: true });
    const a = await copyImage({ src, srcTarget: 'a', dst, dstTag: 'a' });
    const b = await copyImage({ src, srcTarget: 'b', dst, dstTag: 'b', all: true });
    expect(a.digest).toBe(image.digest);
    expect(b.mediaType).toBe(MediaType.ociIndex);
    const info = JSON.parse(await skopeoInspect([`oci:${dst.dir}:a`]));
    expect(info.Digest).toBe(image.digest);
    await execa('skopeo', ['copy', '--all', `oci:${dst.dir}:b`, `oci:${join(tmp, 'again')}:b`]);
  });
});
