import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { openLayoutStore } from '../image/layout-store.js';
import { type Digest, digestHex, sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { isPackfarmError } from '../util/errors.js';
import { canonicalJson } from '../util/json.js';
import { extraBlobDigests, materializeInputs, readDirCacheState } from './node-inputs.js';
import type { LocalImage, TargetJob } from './protocol.js';

/**
 * The node's side of coordinator-only inputs, on real files: images laid out as OCI layouts by manifest
 * digest (once, whatever the concurrency), manifests that do not match the job refused, and a --cache-dir
 * materialized for the job's platform.
 */
let dir: string;
let blobs: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-node-inputs-'));
  blobs = join(dir, 'blobs');
  await mkdir(blobs, { recursive: true });
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const blobPath = (d: Digest) => join(blobs, digestHex(d));
async function putBlob(bytes: Buffer): Promise<{ digest: Digest; size: number }> {
  const digest = sha256Digest(bytes);
  await writeFile(blobPath(digest), bytes);
  return { digest, size: bytes.length };
}

async function image(role: LocalImage['role']): Promise<LocalImage> {
  const layer = await putBlob(Buffer.from(`layer of ${role}`));
  const config = await putBlob(
    Buffer.from(
      canonicalJson({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: [] } }),
    ),
  );
  const manifestBytes = Buffer.from(
    canonicalJson({
      schemaVersion: 2,
      mediaType: MediaType.ociManifest,
      config: { mediaType: MediaType.ociConfig, ...config },
      layers: [{ mediaType: MediaType.ociLayerGzip, ...layer }],
    }),
  );
  const manifest = await putBlob(manifestBytes);
  return {
    role,
    name: `oci:/coordinator/${role}:1`,
    manifest: { ...manifest, mediaType: MediaType.ociManifest },
    config,
    layers: [layer],
  };
}

const baseSpec = (extra: Partial<TargetJob>): TargetJob => ({
  platform: 'linux/amd64',
  app: { digest: sha256Digest('app'), size: 3 },
  buildpacks: [],
  output: { kind: 'registry', image: 'registry.example/app:latest' },
  untagged: false,
  env: [],
  insecureRegistries: [],
  clearCache: false,
  platformApi: '0.14',
  ...extra,
});
const where = () => ({
  dataDir: join(dir, 'data'),
  jobDir: join(dir, 'job'),
  platform: { os: 'linux', architecture: 'amd64' },
});

describe('materializeInputs', () => {
  it('lays an image out once as an OCI layout, even for jobs at the same time', async () => {
    const run = await image('run');
    const spec = baseSpec({ images: [run] });
    expect(extraBlobDigests(spec)).toEqual([run.manifest.digest, run.config.digest, run.layers[0]!.digest]);
    const results = await Promise.all(
      Array.from({ length: 6 }, () => materializeInputs(spec, where(), blobPath)),
    );
    const layoutDir = join(dir, 'data', 'farm', 'images', digestHex(run.manifest.digest));
    for (const r of results) expect(r.runImage).toBe(`oci:${layoutDir}@${run.manifest.digest}`);
    // One layout, no temp dir left beside it.
    expect(await readdir(join(dir, 'data', 'farm', 'images'))).toEqual([digestHex(run.manifest.digest)]);
    const layout = await openLayoutStore(layoutDir);
    const m = await layout.getManifest(run.manifest.digest);
    expect(m.bytes.equals(await readFile(blobPath(run.manifest.digest)))).toBe(true);
    expect(await layout.hasBlob(run.layers[0]!.digest)).toBe(true);
  });

  it('refuses an image whose manifest names other blobs than the job lists', async () => {
    const build = await image('build');
    const other = await putBlob(Buffer.from('another layer'));
    let err: unknown;
    try {
      await materializeInputs(baseSpec({ images: [{ ...build, layers: [other] }] }), where(), blobPath);
    } catch (e) {
      err = e;
    }
    expect(isPackfarmError(err, 'PROTOCOL_ERROR')).toBe(true);
    expect((err as Error).message).toContain('the job lists other blobs than the manifest holds');
  });

  it('puts the coordinator’s cache into the job’s cache dir for the platform, and reads it back', async () => {
    const tar = Buffer.from('a layer tar');
    const layer = await putBlob(tar);
    const metadata = JSON.stringify({ buildpacks: [] });
    const r = await materializeInputs(
      baseSpec({ cacheDir: { metadata, layers: [layer] } }),
      where(),
      blobPath,
    );
    expect(r.cacheDir).toBe(join(dir, 'job', 'cache'));
    const committed = join(dir, 'job', 'cache', 'linux-amd64', 'committed');
    const back = await readDirCacheState(committed);
    expect(back?.state).toEqual({ metadata, layers: [layer] });
    expect(back?.files.get(layer.digest)).toBe(join(committed, `${layer.digest}.tar`));
    // An empty state (no cache yet, --clear-cache): a cache dir with nothing committed.
    const empty = await materializeInputs(
      baseSpec({ cacheDir: { metadata: '', layers: [] } }),
      { ...where(), jobDir: join(dir, 'job2') },
      blobPath,
    );
    expect(await readDirCacheState(join(empty.cacheDir!, 'linux-amd64', 'committed'))).toBeUndefined();
  });
});
