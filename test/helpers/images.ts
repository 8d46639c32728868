import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';
import { type Digest, sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { type Platform, parsePlatform, platformToSpec } from '../../src/oci/platform.js';
import type { ImageStore } from '../../src/image/store.js';
import { canonicalJson } from '../../src/util/json.js';

/**
 * Small, real images for tests: gzip'd tar layers, a config and a manifest written into any ImageStore,
 * and indexes over them. Everything is deterministic for the same inputs.
 */
export interface TestLayer {
  gz: Buffer;
  digest: Digest;
  diffId: Digest;
}

/** A gzip'd tar with the given files (path → content), fixed mtimes and owners. */
export async function tarGz(files: Record<string, string>): Promise<TestLayer> {
  const pack = tar.pack();
  const dirs = new Set<string>();
  for (const path of Object.keys(files).sort()) {
    const parts = path.split('/');
    for (let i = 1; i < parts.length; i++) {
      const d = parts.slice(0, i).join('/');
      if (!dirs.has(d)) {
        dirs.add(d);
        pack.entry({
          name: `${d}/`,
          type: 'directory',
          mode: 0o755,
          mtime: new Date(315532801000),
          uid: 0,
          gid: 0,
        });
      }
    }
    pack.entry(
      {
        name: path,
        mode: path.startsWith('bin/') ? 0o755 : 0o644,
        mtime: new Date(315532801000),
        uid: 0,
        gid: 0,
      },
      files[path] ?? '',
    );
  }
  pack.finalize();
  const chunks: Buffer[] = [];
  for await (const c of pack) chunks.push(c as Buffer);
  const raw = Buffer.concat(chunks);
  const gz = gzipSync(raw, { level: 6 });
  // gzip header bytes 4-7 are the mtime; zlib writes 0, so the output is stable.
  return { gz, digest: sha256Digest(gz), diffId: sha256Digest(raw) };
}

export interface TestImageOptions {
  platform?: string | Platform;
  files?: Record<string, string>;
  /** Several layers; default one layer from `files`. */
  layers?: Array<Record<string, string>>;
  tag?: string;
  docker?: boolean;
  env?: string[];
  entrypoint?: string[];
  cmd?: string[];
  labels?: Record<string, string>;
}

export interface TestImage {
  digest: Digest;
  bytes: Buffer;
  mediaType: string;
  size: number;
  platform: Platform;
  config: { digest: Digest; bytes: Buffer };
  layers: TestLayer[];
}

export async function writeTestImage(store: ImageStore, opts: TestImageOptions = {}): Promise<TestImage> {
  const platform =
    typeof opts.platform === 'object' ? opts.platform : parsePlatform(opts.platform ?? 'linux/amd64');
  const layerSpecs = opts.layers ?? [opts.files ?? { 'hello.txt': `hello from ${platform.architecture}\n` }];
  const layers: TestLayer[] = [];
  for (const files of layerSpecs) layers.push(await tarGz(files));
  const spec = platformToSpec(platform);
  const config = {
    ...spec,
    created: '1980-01-01T00:00:01Z',
    config: {
      Env: opts.env ?? ['PATH=/usr/local/bin:/usr/bin:/bin'],
      ...(opts.entrypoint ? { Entrypoint: opts.entrypoint } : {}),
      ...(opts.cmd ? { Cmd: opts.cmd } : {}),
      ...(opts.labels ? { Labels: opts.labels } : {}),
    },
    rootfs: { type: 'layers', diff_ids: layers.map((l) => l.diffId) },
    history: layers.map(() => ({ created: '1980-01-01T00:00:01Z', created_by: 'packfarm test' })),
  };
  const cfgBytes = Buffer.from(canonicalJson(config));
  const cfgDigest = sha256Digest(cfgBytes);
  await store.putBlob({ digest: cfgDigest, size: cfgBytes.length, open: () => Readable.from([cfgBytes]) });
  for (const l of layers)
    await store.putBlob({ digest: l.digest, size: l.gz.length, open: () => Readable.from([l.gz]) });
  const mediaType = opts.docker ? MediaType.dockerManifest : MediaType.ociManifest;
  const manifest = {
    schemaVersion: 2,
    mediaType,
    config: {
      mediaType: opts.docker ? MediaType.dockerConfig : MediaType.ociConfig,
      digest: cfgDigest,
      size: cfgBytes.length,
    },
    layers: layers.map((l) => ({
      mediaType: opts.docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip,
      digest: l.digest,
      size: l.gz.length,
    })),
  };
  const bytes = Buffer.from(canonicalJson(manifest));
  const digest = await store.putManifest({ bytes, mediaType, ...(opts.tag ? { tag: opts.tag } : {}) });
  return {
    digest,
    bytes,
    mediaType,
    size: bytes.length,
    platform,
    config: { digest: cfgDigest, bytes: cfgBytes },
    layers,
  };
}

/** An index over images already in `store`, in the order given (not sorted: tests control the order). */
export async function writeTestIndex(
  store: ImageStore,
  images: TestImage[],
  opts: { tag?: string; docker?: boolean; extra?: Array<Record<string, unknown>> } = {},
): Promise<{ digest: Digest; bytes: Buffer; mediaType: string }> {
  const mediaType = opts.docker ? MediaType.dockerManifestList : MediaType.ociIndex;
  const doc = {
    schemaVersion: 2,
    mediaType,
    manifests: [
      ...images.map((i) => ({
        mediaType: i.mediaType,
        digest: i.digest,
        size: i.size,
        platform: platformToSpec(i.platform),
      })),
      ...(opts.extra ?? []),
    ],
  };
  const bytes = Buffer.from(canonicalJson(doc));
  const digest = await store.putManifest({ bytes, mediaType, ...(opts.tag ? { tag: opts.tag } : {}) });
  return { digest, bytes, mediaType };
}
