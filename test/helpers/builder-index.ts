import { cp, mkdir, readFile, writeFile } from 'node:fs/promises';
import { basename, join } from 'node:path';
import { Readable } from 'node:stream';
import { writeLayer } from '../../src/archive/index.js';
import { publishIndex } from '../../src/image/publish-index.js';
import type { ImageStore } from '../../src/image/store.js';
import { type Digest, sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import type { Platform } from '../../src/oci/platform.js';
import { canonicalJson } from '../../src/util/json.js';
import { writeBusyboxBuildImage } from './build-image.js';
import { busyboxFor } from './debian-packages.js';
import { createRunImage } from './run-image.js';

/**
 * A multi-arch builder for tests: per platform, the busybox build image of that architecture (Debian's
 * busybox-static, CNB user 1000) plus one /cnb layer (order.toml and the given buildpack, the same for every
 * architecture), labelled with the run image; published as an index `builder:TAG`. The run image index
 * `run:TAG` holds busybox of each architecture.
 */
export async function writeBuilderIndex(opts: {
  builder: ImageStore;
  run: ImageStore;
  runRef: string;
  tag: string;
  platforms: Platform[];
  /** A buildpack dir `<id with / as _>/<version>` layout is built from id and version. */
  buildpack: { dir: string; id: string; version: string };
  workDir: string;
}): Promise<void> {
  const runImages = [];
  for (const p of opts.platforms)
    runImages.push(
      await createRunImage({
        store: opts.run,
        tag: `${opts.tag}-${p.architecture}`,
        platform: p,
        busyboxPath: await busyboxFor(p.architecture),
      }),
    );
  await publishIndex({ store: opts.run, images: runImages.map((i) => i.digest), tags: [opts.tag] });

  const tree = join(opts.workDir, 'builder-tree');
  const bpDir = join(
    tree,
    'cnb',
    'buildpacks',
    opts.buildpack.id.replace(/\//g, '_'),
    opts.buildpack.version,
  );
  await mkdir(bpDir, { recursive: true });
  await cp(opts.buildpack.dir, bpDir, { recursive: true });
  await writeFile(
    join(tree, 'cnb', 'order.toml'),
    `[[order]]\n[[order.group]]\nid = "${opts.buildpack.id}"\nversion = "${opts.buildpack.version}"\n`,
  );
  const layerFile = join(opts.workDir, `${basename(tree)}.tar.gz`);
  const layer = await writeLayer({ dir: tree, out: layerFile });
  const gz = await readFile(layerFile);
  const images: Digest[] = [];
  for (const platform of opts.platforms) {
    const base = await writeBusyboxBuildImage({
      store: opts.builder,
      tag: `build-${platform.architecture}`,
      platform,
    });
    const cfg = base.config.value as {
      config: { Labels: Record<string, string> };
      rootfs: { diff_ids: string[] };
    };
    const config = {
      ...cfg,
      config: {
        ...cfg.config,
        Labels: {
          ...cfg.config.Labels,
          'io.buildpacks.builder.metadata': JSON.stringify({ images: [{ image: opts.runRef }] }),
        },
      },
      rootfs: { type: 'layers', diff_ids: [...cfg.rootfs.diff_ids, layer.diffId] },
    };
    const cfgBytes = Buffer.from(canonicalJson(config));
    const cfgDigest = sha256Digest(cfgBytes);
    await opts.builder.putBlob({
      digest: cfgDigest,
      size: cfgBytes.length,
      open: () => Readable.from([cfgBytes]),
    });
    await opts.builder.putBlob({ digest: layer.digest, size: layer.size, open: () => Readable.from([gz]) });
    const manifest = Buffer.from(
      canonicalJson({
        schemaVersion: 2,
        mediaType: MediaType.ociManifest,
        config: { mediaType: MediaType.ociConfig, digest: cfgDigest, size: cfgBytes.length },
        layers: [
          ...base.layers.map((l) => ({ mediaType: MediaType.ociLayerGzip, digest: l.digest, size: l.size })),
          { mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size },
        ],
      }),
    );
    images.push(await opts.builder.putManifest({ bytes: manifest, mediaType: MediaType.ociManifest }));
  }
  await publishIndex({ store: opts.builder, images, tags: [opts.tag] });
}
