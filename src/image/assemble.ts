import { matchPlatform, runnableChildren } from './copy.js';
import type { ImageStore, PutBlobResult } from './store.js';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { MediaType, isDockerMediaType, isIndexMediaType } from '../oci/media-types.js';
import { type Platform, formatPlatform, platformFromSpec, platformToSpec } from '../oci/platform.js';
import {
  type ContainerConfig,
  type Descriptor,
  type ImageConfig,
  ImageConfigSchema,
  ImageIndexSchema,
  type ImageManifest,
  ImageManifestSchema,
} from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { canonicalJson } from '../util/json.js';
import { parseJson, parseWith } from '../util/validate.js';

/** An image read for building on: its manifest and config, parsed, plus where it came from. */
export interface BaseImage {
  store: ImageStore;
  /** Digest of the image manifest (the platform's child when the target was an index). */
  digest: Digest;
  /** Digest of what `target` named (an index or the manifest itself). */
  topDigest: Digest;
  mediaType: string;
  manifest: ImageManifest;
  manifestBytes: Buffer;
  config: ImageConfig;
  configBytes: Buffer;
  platform: Platform;
}

const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

/**
 * Read the image `target` names in `store` for `platform`: an image manifest directly (its config must be
 * for that platform when one is given), or the matching child of an index. Only manifest and config are read;
 * layers never are.
 */
export async function readBaseImage(
  store: ImageStore,
  target: string,
  platform?: Platform,
): Promise<BaseImage> {
  const top = await store.getManifest(target);
  let stored = top;
  const source = `${store.description}@${top.digest}`;
  if (isIndexMediaType(top.mediaType)) {
    const index = parseWith(ImageIndexSchema, parseJson(top.bytes.toString('utf8'), source), source);
    const want = platform ?? { os: 'linux', architecture: 'amd64' };
    const hit = matchPlatform(index, want);
    if (!hit) {
      const have = runnableChildren(index).map((d) => formatPlatform(platformFromSpec(d.platform!)));
      throw new PackfarmError(
        'NO_MATCHING_PLATFORM',
        `${source}: no image for ${formatPlatform(want)} (the index has ${have.join(', ') || 'no runnable images'})`,
      );
    }
    stored = await store.getManifest(hit.digest);
    if (isIndexMediaType(stored.mediaType)) {
      throw new PackfarmError('MANIFEST_INVALID', `${source}: nested index for ${formatPlatform(want)}`);
    }
  }
  const msource = `${store.description}@${stored.digest}`;
  const manifest = parseWith(ImageManifestSchema, parseJson(stored.bytes.toString('utf8'), msource), msource);
  // The exact bytes: a config we carry over is read, never re-serialised.
  const exact = await readBlobBytes(store, manifest.config.digest, MAX_CONFIG_BYTES);
  if (sha256Digest(exact) !== manifest.config.digest) {
    throw new PackfarmError('BLOB_INVALID', `${msource}: config does not match ${manifest.config.digest}`);
  }
  const config = parseWith(
    ImageConfigSchema,
    parseJson(exact.toString('utf8'), `${msource} config`),
    `${msource} config`,
  );
  const imgPlatform = platformFromSpec(config);
  if (platform && (imgPlatform.os !== platform.os || imgPlatform.architecture !== platform.architecture)) {
    throw new PackfarmError(
      'PLATFORM_MISMATCH',
      `${msource}: image is ${formatPlatform(imgPlatform)}, ${formatPlatform(platform)} was asked for`,
    );
  }
  if (config.rootfs.diff_ids.length !== manifest.layers.length) {
    throw new PackfarmError(
      'MANIFEST_INVALID',
      `${msource}: ${manifest.layers.length} layers but ${config.rootfs.diff_ids.length} diff_ids in the config`,
    );
  }
  return {
    store,
    digest: stored.digest,
    topDigest: top.digest,
    mediaType: stored.mediaType,
    manifest,
    manifestBytes: stored.bytes,
    config,
    configBytes: exact,
    platform: imgPlatform,
  };
}

async function readBlobBytes(store: ImageStore, digest: Digest, max: number): Promise<Buffer> {
  const stream = await store.getBlob(digest);
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of stream) {
    const b = c as Buffer;
    n += b.length;
    if (n > max) {
      stream.destroy();
      throw new PackfarmError('BLOB_TOO_LARGE', `${store.description}: blob ${digest} exceeds ${max} bytes`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** A layer to append: its blob is already in (or about to be put into) the destination. */
export interface AppendedLayer {
  digest: Digest;
  size: number;
  diffId: Digest;
  /** History `created_by` (e.g. "Layer: 'node', Created by buildpack: example/node@1.0"). */
  createdBy: string;
  comment?: string;
}

export interface AssembleOptions {
  base: BaseImage;
  layers: readonly AppendedLayer[];
  /** Replaces the base's container config fields that are given (Labels are merged: these win). */
  config: ContainerConfig;
  created: Date;
  /** Overrides os/architecture/variant of the base (the target). */
  platform?: Platform;
}

export interface AssembledImage {
  manifestBytes: Buffer;
  manifestDigest: Digest;
  mediaType: string;
  configBytes: Buffer;
  configDigest: Digest;
  config: ImageConfig;
  /** Layer descriptors of the new manifest (base first). */
  layers: Descriptor[];
}

/**
 * The manifest and config of base + appended layers, as canonical JSON: the same inputs give the same bytes.
 * The base's format is kept (a Docker v2 base gives a Docker v2 image) so every layer media type matches.
 */
export function assembleImage(opts: AssembleOptions): AssembledImage {
  const { base } = opts;
  const docker = isDockerMediaType(base.mediaType);
  const created = opts.created.toISOString().replace(/\.000Z$/, 'Z');
  const baseCfg = base.config.config ?? {};
  const labels = { ...(baseCfg.Labels ?? {}), ...(opts.config.Labels ?? {}) };
  const history = [
    ...(base.config.history ?? []),
    ...opts.layers.map((l) => ({
      created,
      created_by: l.createdBy,
      ...(l.comment ? { comment: l.comment } : {}),
    })),
  ];
  const platform = opts.platform ? platformToSpec(opts.platform) : undefined;
  const baseNoPlatform = { ...base.config };
  if (platform) {
    delete baseNoPlatform.variant;
    delete baseNoPlatform['os.version'];
  }
  const config: ImageConfig = {
    ...baseNoPlatform,
    ...(platform ?? {}),
    created,
    config: { ...baseCfg, ...opts.config, Labels: labels },
    rootfs: {
      type: 'layers',
      diff_ids: [...base.config.rootfs.diff_ids, ...opts.layers.map((l) => l.diffId)],
    },
    history,
  };
  // A container config of the base may carry fields only the Docker daemon reads; they are kept untouched.
  delete (config as Record<string, unknown>).container_config;
  const configBytes = Buffer.from(canonicalJson(config));
  const configDigest = sha256Digest(configBytes);
  const layerType = docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip;
  const layers: Descriptor[] = [
    ...base.manifest.layers.map((d) => ({ ...d })),
    ...opts.layers.map((l) => ({ mediaType: layerType, digest: l.digest, size: l.size })),
  ];
  const mediaType = docker ? MediaType.dockerManifest : MediaType.ociManifest;
  const manifest = {
    schemaVersion: 2,
    mediaType,
    config: {
      mediaType: docker ? MediaType.dockerConfig : MediaType.ociConfig,
      digest: configDigest,
      size: configBytes.length,
    },
    layers,
  };
  const manifestBytes = Buffer.from(canonicalJson(manifest));
  return {
    manifestBytes,
    manifestDigest: sha256Digest(manifestBytes),
    mediaType,
    configBytes,
    configDigest,
    config,
    layers,
  };
}

export interface BaseLayerTransfer {
  digest: Digest;
  outcome: PutBlobResult['outcome'];
}

/**
 * Make the base image's layer blobs present in `dest`: nothing moves when they are already there, a registry
 * on the same host mounts them from the base's repository, anything else streams them across. Bounded by
 * `concurrency` transfers at once.
 */
export async function transferBaseLayers(
  base: BaseImage,
  dest: ImageStore,
  opts: { concurrency?: number; signal?: AbortSignal } = {},
): Promise<BaseLayerTransfer[]> {
  const { default: pLimit } = await import('p-limit');
  const limit = pLimit(opts.concurrency ?? 3);
  const mountFrom = base.store.registryRepository;
  return Promise.all(
    base.manifest.layers.map((d) =>
      limit(async () => {
        opts.signal?.throwIfAborted();
        const r = await dest.putBlob({
          digest: d.digest as Digest,
          size: d.size,
          open: () => base.store.getBlob(d.digest as Digest),
          ...(mountFrom ? { mountFrom } : {}),
        });
        return { digest: d.digest as Digest, outcome: r.outcome };
      }),
    ),
  );
}
