import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTestImage, writeTestIndex } from '../../test/helpers/images.js';
import { MediaType } from '../oci/media-types.js';
import { isPackfarmError } from '../util/errors.js';
import { type AssembleOptions, assembleImage, transferBaseLayers } from './assemble.js';
import { readBaseImage } from './read.js';
import { type LayoutStore, openLayoutStore } from './layout-store.js';

let dir: string;
let store: LayoutStore;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-assemble-'));
  store = await openLayoutStore(join(dir, 'src'), { create: true });
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const appended = {
  digest: `sha256:${'a'.repeat(64)}`,
  size: 10,
  diffId: `sha256:${'b'.repeat(64)}`,
  createdBy: 'Layer: test',
} as const;

describe('readBaseImage', () => {
  it('picks the platform child of an index and reads its config', async () => {
    const amd = await writeTestImage(store, { platform: 'linux/amd64' });
    const arm = await writeTestImage(store, { platform: 'linux/arm64/v8' });
    await writeTestIndex(store, [amd, arm], { tag: 'multi' });
    const base = await readBaseImage(store, 'multi', { os: 'linux', architecture: 'arm64' });
    expect(base.digest).toBe(arm.digest);
    expect(base.topDigest).not.toBe(arm.digest);
    expect(base.platform.architecture).toBe('arm64');
    expect(base.configBytes.equals(arm.config.bytes)).toBe(true);
  });

  it('names the platforms an index has when none matches, and refuses a manifest of another platform', async () => {
    const err = await readBaseImage(store, 'multi', { os: 'linux', architecture: 's390x' }).catch((e) => e);
    expect(isPackfarmError(err, 'NO_MATCHING_PLATFORM')).toBe(true);
    expect(String(err.message)).toContain('linux/amd64');
    await writeTestImage(store, { platform: 'linux/amd64', tag: 'amd' });
    const err2 = await readBaseImage(store, 'amd', { os: 'linux', architecture: 'arm64' }).catch((e) => e);
    expect(isPackfarmError(err2, 'PLATFORM_MISMATCH')).toBe(true);
  });
});

describe('assembleImage', () => {
  it('is deterministic, appends layers, history and labels, and keeps the base format', async () => {
    await writeTestImage(store, { tag: 'base', labels: { keep: 'me', over: 'base' }, docker: true });
    const base = await readBaseImage(store, 'base');
    const opts: AssembleOptions = {
      base,
      layers: [appended],
      config: { Env: ['A=1'], Labels: { over: 'app' }, Entrypoint: ['/x'] },
      created: new Date('2024-01-02T03:04:05Z'),
    };
    const a = assembleImage(opts);
    const b = assembleImage(opts);
    expect(a.manifestDigest).toBe(b.manifestDigest);
    expect(a.mediaType).toBe(MediaType.dockerManifest);
    expect(a.layers.at(-1)).toEqual({
      mediaType: MediaType.dockerLayerGzip,
      digest: appended.digest,
      size: 10,
    });
    expect(a.config.rootfs.diff_ids.at(-1)).toBe(appended.diffId);
    expect(a.config.history?.at(-1)).toEqual({ created: '2024-01-02T03:04:05Z', created_by: 'Layer: test' });
    expect(a.config.created).toBe('2024-01-02T03:04:05Z');
    expect(a.config.config?.Labels).toEqual({ keep: 'me', over: 'app' });
    expect(a.config.config?.Env).toEqual(['A=1']);
    const c = assembleImage({ ...opts, created: new Date('2024-01-02T03:04:06Z') });
    expect(c.manifestDigest).not.toBe(a.manifestDigest);
  });

  it('takes os/architecture/variant from the target', async () => {
    await writeTestImage(store, { tag: 'armv7', platform: 'linux/arm/v7' });
    const base = await readBaseImage(store, 'armv7');
    const r = assembleImage({
      base,
      layers: [],
      config: {},
      created: new Date(0),
      platform: { os: 'linux', architecture: 'arm64' },
    });
    expect(r.config.architecture).toBe('arm64');
    expect(r.config.variant).toBeUndefined();
    expect(r.mediaType).toBe(MediaType.ociManifest);
  });
});

describe('transferBaseLayers', () => {
  it('copies blobs a destination lacks and leaves present ones alone', async () => {
    const dest = await openLayoutStore(join(dir, 'dest'), { create: true });
    const base = await readBaseImage(store, 'amd');
    expect((await transferBaseLayers(base, dest)).map((t) => t.outcome)).toEqual(['uploaded']);
    expect((await transferBaseLayers(base, dest)).map((t) => t.outcome)).toEqual(['exists']);
  });
});
