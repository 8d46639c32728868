import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractLayer } from '../../src/archive/extract.js';
import { resolveBuilder } from '../../src/builder/resolve.js';
import { stageBuildpack } from '../../src/buildpack/source.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { canonicalJson } from '../../src/util/json.js';
import { makeTar } from '../fixtures/archive/tars.js';

/**
 * A truncated tar entry (a header declaring more bytes than follow) must reject the promise that reads it
 * with INVALID_LAYER naming the layer, on every path that extracts; never an unhandled 'error' event.
 */
let tmp: string;
let truncated: Buffer;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-hostile-layers-'));
  const full = await makeTar([
    { name: 'cnb/', type: 'directory' },
    { name: 'cnb/order.toml', content: Buffer.alloc(8000, 0x61) },
  ]);
  truncated = full.subarray(0, 512 * 2 + 3000);
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

describe('a truncated tar entry', () => {
  it.each([
    ['plain tar', () => truncated],
    ['gzip tar', () => gzipSync(truncated)],
  ])('extractLayer rejects a %s with INVALID_LAYER naming the layer', async (_name, bytes) => {
    const dest = await mkdtemp(join(tmp, 'dest-'));
    await expect(
      extractLayer({ source: Readable.from([bytes()]), dest, name: 'layer sha256:abc' }),
    ).rejects.toMatchObject({ code: 'INVALID_LAYER', message: expect.stringContaining('layer sha256:abc') });
  });

  it('a --buildpack archive is refused as not a readable archive, naming it', async () => {
    const archive = join(tmp, 'bp.tgz');
    await writeFile(archive, gzipSync(truncated));
    const scratch = join(tmp, 'bp-scratch');
    await expect(stageBuildpack(archive, { cwd: tmp, scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDPACK_ARCHIVE_INVALID',
      message: expect.stringMatching(/cannot read the layer: Unexpected end of data/),
    });
    expect(await readdir(scratch)).toEqual([]);
  });

  it('a builder image with a truncated layer is refused with INVALID_LAYER naming the layer', async () => {
    const dir = join(tmp, 'builder-layout');
    const store = await openLayoutStore(dir, { create: true });
    const gz = gzipSync(truncated);
    const layer = sha256Digest(gz);
    await store.putBlob({ digest: layer, size: gz.length, open: () => Readable.from([gz]) });
    const config = Buffer.from(
      canonicalJson({
        architecture: 'amd64',
        os: 'linux',
        config: {},
        rootfs: { type: 'layers', diff_ids: [sha256Digest(truncated)] },
      }),
    );
    const cfg = sha256Digest(config);
    await store.putBlob({ digest: cfg, size: config.length, open: () => Readable.from([config]) });
    const manifest = Buffer.from(
      canonicalJson({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: cfg, size: config.length },
        layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer, size: gz.length }],
      }),
    );
    await store.putManifest({ bytes: manifest, mediaType: MediaType.ociManifest, tag: 'latest' });
    await expect(
      resolveBuilder(`oci:${dir}:latest`, { cwd: tmp, scratchDir: join(tmp, 'builder-scratch') }),
    ).rejects.toMatchObject({ code: 'INVALID_LAYER', message: expect.stringContaining(layer) });
  });
});
