import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type TestImage, tarGz, writeTestImage, writeTestIndex } from '../../test/helpers/images.js';
import { digestReference, repositoryKey } from '../image/image-name.js';
import { readBaseImage } from '../image/read.js';
import { type LayoutStore, openLayoutStore } from '../image/layout-store.js';
import type { Digest } from '../oci/digest.js';
import { parsePlatform } from '../oci/platform.js';
import type { ImageConfig } from '../oci/schemas.js';
import { Label, LifecycleMetadataSchema } from '../platform/labels.js';
import { isPackfarmError } from '../util/errors.js';
import { rebase, splitHistory, targetMismatches, updatedMetadata } from './rebase.js';

const BASE_V1 = { 'etc/os-release': 'ID=busybox\n', 'etc/run-image-version': '1\n' };
const BASE_V2 = { 'etc/os-release': 'ID=busybox\n', 'etc/run-image-version': '2\n' };
const APP = { 'workspace/app.txt': 'app\n' };

let root: string;
let store: LayoutStore;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-rebase-unit-'));
  store = await openLayoutStore(join(root, 'layout'), { create: true });
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const runLabels = (distroVersion = '1.36') => ({
  [Label.distroName]: 'busybox',
  [Label.distroVersion]: distroVersion,
  'io.buildpacks.base.id': 'example.run',
});

/** A run image `run:<tag>` and an app image on it (base layer + one app layer), labelled like the exporter. */
async function appOn(
  platform: string,
  opts: { tag: string; labels?: Record<string, string>; mirrors?: string[] },
): Promise<TestImage> {
  const base = await tarGz(BASE_V1);
  const md = {
    app: [{ sha: (await tarGz(APP)).diffId }],
    buildpacks: [],
    runImage: {
      topLayer: base.diffId,
      reference: `oci:${root}/layout@sha256:${'0'.repeat(64)}`,
      image: `oci:${root}/layout:run-v1`,
      ...(opts.mirrors ? { mirrors: opts.mirrors } : {}),
    },
    stack: { runImage: { image: `oci:${root}/layout:run-v1` } },
    extra: { kept: true },
  };
  return writeTestImage(store, {
    platform,
    tag: opts.tag,
    layers: [BASE_V1, APP],
    labels: {
      ...runLabels(),
      [Label.lifecycleMetadata]: JSON.stringify(md),
      [Label.rebasable]: 'true',
      'org.example.app': 'yes',
      ...opts.labels,
    },
  });
}

async function runImage(
  platform: string,
  tag: string,
  labels = { ...runLabels(), 'io.buildpacks.base.released': 'v2' },
) {
  return writeTestImage(store, { platform, tag, layers: [BASE_V2], labels });
}

describe('rebase over an OCI layout', () => {
  it('swaps the base layer, keeps the app layer and rewrites the label', async () => {
    const app = await appOn('linux/amd64', { tag: 'app1' });
    const v2 = await runImage('linux/amd64', 'run-v2');
    const result = await rebase({
      source: { store, target: 'app1' },
      runImage: { store, target: 'run-v2', name: `oci:${root}/layout:run-v2` },
    });
    expect(result.kind).toBe('image');
    expect(result.tag).toBe('app1');
    const img = await readBaseImage(store, 'app1');
    expect(img.digest).toBe(result.digest);
    expect(img.manifest.layers.map((l) => l.digest)).toEqual([v2.layers[0]?.digest, app.layers[1]?.digest]);
    expect(img.config.rootfs.diff_ids).toEqual([v2.layers[0]?.diffId, app.layers[1]?.diffId]);
    const labels = img.config.config?.Labels ?? {};
    expect(labels['io.buildpacks.base.released']).toBe('v2');
    expect(labels['org.example.app']).toBe('yes');
    const raw = JSON.parse(labels[Label.lifecycleMetadata] ?? '{}');
    const md = LifecycleMetadataSchema.parse(raw);
    expect(md.runImage.topLayer).toBe(v2.layers[0]?.diffId);
    expect(md.runImage.reference).toBe(`oci:${root}/layout@${v2.digest}`);
    // A new tag of the same layout is a new name: recorded, mirrors cleared; other fields survive.
    expect(md.runImage.image).toBe(`oci:${root}/layout:run-v2`);
    expect(md.stack?.runImage.image).toBe(`oci:${root}/layout:run-v2`);
    expect(raw.extra).toEqual({ kept: true });
    expect(img.config.history).toHaveLength(2);
    expect(result.images[0]?.baseLayers).toEqual({ removed: 1, added: 1 });
  });

  it('refuses another architecture and rebasable=false unless forced', async () => {
    await appOn('linux/amd64', { tag: 'app2' });
    await runImage('linux/arm64', 'run-arm');
    const before = await store.resolve('app2');
    const err = await rebase({
      source: { store, target: 'app2' },
      runImage: { store, target: 'run-arm', name: `oci:${root}/layout:run-arm` },
    }).catch((e: unknown) => e);
    expect(isPackfarmError(err, 'REBASE_ERROR')).toBe(true);
    expect((err as Error).message).toMatch(/linux\/arm64/);
    expect((await store.resolve('app2'))?.digest).toBe(before?.digest);

    await appOn('linux/amd64', { tag: 'app3', labels: { [Label.rebasable]: 'false' } });
    await runImage('linux/amd64', 'run-v2');
    const refused = await rebase({
      source: { store, target: 'app3' },
      runImage: { store, target: 'run-v2', name: `oci:${root}/layout:run-v2` },
    }).catch((e: unknown) => e);
    expect(isPackfarmError(refused, 'REBASE_ERROR')).toBe(true);
    expect((refused as Error).message).toMatch(/rebasable=false/);
    const forced = await rebase({
      source: { store, target: 'app3' },
      runImage: { store, target: 'run-v2', name: `oci:${root}/layout:run-v2` },
      force: true,
    });
    expect(forced.images[0]?.platform).toBe('linux/amd64');
  });

  it('refuses a run image of another repository unless forced or the check is off', async () => {
    await appOn('linux/amd64', { tag: 'app4' });
    const other = await openLayoutStore(join(root, 'other'), { create: true });
    await writeTestImage(other, { tag: 'v2', layers: [BASE_V2], labels: runLabels() });
    const opts = {
      source: { store, target: 'app4' },
      runImage: { store: other, target: 'v2', name: `oci:${root}/other:v2` },
    };
    const err = await rebase(opts).catch((e: unknown) => e);
    expect(isPackfarmError(err, 'REBASE_ERROR')).toBe(true);
    expect((err as Error).message).toMatch(/not the recorded run image/);
    const ok = await rebase({ ...opts, checkRunImageName: false });
    expect(ok.images[0]?.runImage.image).toBe(`oci:${root}/other:v2`);
  });

  it('rebases each platform of an index against the matching platform of the new run index', async () => {
    const a = await appOn('linux/amd64', { tag: 'tmp-a' });
    const b = await appOn('linux/arm64', { tag: 'tmp-b' });
    await writeTestIndex(store, [a, b], { tag: 'app-index' });
    const ra = await runImage('linux/amd64', 'tmp-ra');
    const rb = await runImage('linux/arm64', 'tmp-rb');
    await writeTestIndex(store, [ra, rb], { tag: 'run-index' });
    const result = await rebase({
      source: { store, target: 'app-index' },
      runImage: { store, target: 'run-index', name: `oci:${root}/layout:run-index` },
    });
    expect(result.kind).toBe('index');
    expect(result.images.map((i) => i.platform)).toEqual(['linux/amd64', 'linux/arm64']);
    const arm = await readBaseImage(store, 'app-index', parsePlatform('linux/arm64'));
    expect(arm.manifest.layers[0]?.digest).toBe(rb.layers[0]?.digest);
    expect(arm.manifest.layers[1]?.digest).toBe(b.layers[1]?.digest);
    const md = LifecycleMetadataSchema.parse(
      JSON.parse(arm.config.config?.Labels?.[Label.lifecycleMetadata] ?? ''),
    );
    expect(md.runImage.reference).toBe(`oci:${root}/layout@${rb.digest}`);
    expect(arm.platform.architecture).toBe('arm64');
  });

  it('leaves the index tag alone when one platform is refused', async () => {
    const a = await appOn('linux/amd64', { tag: 'tmp-c' });
    const b = await appOn('linux/arm64', { tag: 'tmp-d' });
    const idx = await writeTestIndex(store, [a, b], { tag: 'app-index2' });
    const ra = await runImage('linux/amd64', 'tmp-re');
    await writeTestIndex(store, [ra], { tag: 'run-amd64-only' });
    const err = await rebase({
      source: { store, target: 'app-index2' },
      runImage: { store, target: 'run-amd64-only', name: `oci:${root}/layout:run-amd64-only` },
    }).catch((e: unknown) => e);
    expect(isPackfarmError(err, 'REBASE_ERROR')).toBe(true);
    expect((err as Error).message).toMatch(/no image for linux\/arm64/);
    expect((await store.resolve('app-index2'))?.digest).toBe(idx.digest);
  });
});

describe('rebase helpers', () => {
  const amd = parsePlatform('linux/amd64');
  const armv7 = parsePlatform('linux/arm/v7');
  it('compares target data, with empty fields of the run image matching anything', () => {
    expect(targetMismatches({ platform: amd, labels: {} }, { platform: amd, labels: {} })).toEqual([]);
    expect(
      targetMismatches(
        { platform: armv7, labels: {} },
        { platform: parsePlatform('linux/arm/v6'), labels: {} },
      ),
    ).toEqual(['variant v7 ≠ v6']);
    expect(
      targetMismatches(
        { platform: amd, labels: { [Label.distroName]: 'ubuntu', [Label.distroVersion]: '22.04' } },
        { platform: amd, labels: { [Label.distroName]: 'ubuntu', [Label.distroVersion]: '24.04' } },
      ),
    ).toEqual([`${Label.distroVersion} 22.04 ≠ 24.04`]);
    expect(
      targetMismatches(
        { platform: amd, labels: { [Label.distroName]: 'ubuntu' } },
        { platform: amd, labels: {} },
      ),
    ).toEqual([]);
    expect(
      targetMismatches(
        { platform: amd, labels: {} },
        { platform: { os: 'windows', architecture: 'amd64' }, labels: {} },
      ),
    ).toEqual(['os linux ≠ windows']);
  });

  it('names repositories of references and layouts', () => {
    expect(repositoryKey('registry.example:5000/team/run:v2')).toBe('registry.example:5000/team/run');
    expect(repositoryKey('docker://busybox')).toBe('docker.io/library/busybox');
    expect(repositoryKey('oci:/data/run:v2')).toBe('oci:/data/run');
    expect(repositoryKey('oci:/data/run@sha256:abc')).toBe('oci:/data/run');
    const d = `sha256:${'a'.repeat(64)}` as Digest;
    expect(digestReference('reg.example/run:v2', d)).toBe(`reg.example/run@${d}`);
    expect(digestReference('oci:/data/run:v2', d)).toBe(`oci:/data/run@${d}`);
  });

  it('keeps the recorded name when the new run image is a mirror', () => {
    const raw = { runImage: { topLayer: 'a', reference: 'r', image: 'reg/run:1', mirrors: ['m/run:1'] } };
    const md = LifecycleMetadataSchema.parse(raw);
    const next = updatedMetadata(raw, md, { runName: 'm/run:1', newTop: 'b', reference: 'm/run@x' });
    expect(next.label.runImage).toEqual({
      topLayer: 'b',
      reference: 'm/run@x',
      image: 'reg/run:1',
      mirrors: ['m/run:1'],
    });
    expect(next.image).toBe('reg/run:1');
  });

  it('splits history above the run image, or gives up when it does not match the layers', () => {
    const config: ImageConfig = {
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers' as const, diff_ids: ['sha256:a', 'sha256:b'] as Digest[] },
      history: [{ created_by: 'base' }, { created_by: 'env', empty_layer: true }, { created_by: 'app' }],
    };
    expect(splitHistory(config, 1)).toEqual([
      { created_by: 'env', empty_layer: true },
      { created_by: 'app' },
    ]);
    expect(splitHistory({ ...config, history: [{ created_by: 'x' }] }, 1)).toBeUndefined();
  });
});
