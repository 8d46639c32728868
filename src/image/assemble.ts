import type { BaseImage } from './read.js';
import type { ImageStore, PutBlobResult } from './store.js';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { MediaType, isDockerMediaType } from '../oci/media-types.js';
import { type Platform, platformToSpec } from '../oci/platform.js';
import type { ContainerConfig, Descriptor, ImageConfig } from '../oci/schemas.js';
import { canonicalJson } from '../util/json.js';

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
