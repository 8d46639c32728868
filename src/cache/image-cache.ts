import { REPRODUCIBLE_EPOCH } from '../util/time.js';
import { createReadStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { Readable } from 'node:stream';
import { gzipSync } from 'node:zlib';
import type { ImageStore } from '../image/store.js';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { isImageManifestMediaType, MediaType } from '../oci/media-types.js';
import {
  formatPlatform,
  type Platform,
  platformFromSpec,
  platformsEqual,
  platformToSpec,
} from '../oci/platform.js';
import { type Descriptor, ImageConfigSchema, ImageManifestSchema } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { canonicalJson } from '../util/json.js';
import type { Logger } from '../util/log.js';
import { readCapped } from '../util/stream.js';
import { parseJson, parseWith } from '../util/validate.js';
import {
  CACHE_METADATA_LABEL,
  type CacheMetadata,
  emptyCacheMetadata,
  parseCacheMetadata,
} from './metadata.js';
import type { CacheBackend, CacheWriter } from './types.js';
import { makeTempDir } from '../util/tempdir.js';

const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

/** An empty tar: two 512-byte zero blocks (end-of-archive), the layer the reference adds to an empty cache. */
const EMPTY_TAR = Buffer.alloc(1024);
export const EMPTY_LAYER_DIFF_ID = sha256Digest(EMPTY_TAR);

async function addEmptyLayer(
  store: ImageStore,
  push: (diffId: Digest, d: Descriptor) => void,
): Promise<void> {
  // gzip with no name and mtime 0: the same bytes on every run.
  const gz = gzipSync(EMPTY_TAR, { level: 9 });
  const digest = sha256Digest(gz);
  await store.putBlob({ digest, size: gz.length, open: () => Readable.from([gz]) });
  push(EMPTY_LAYER_DIFF_ID, { mediaType: MediaType.ociLayerGzip, digest, size: gz.length });
}

interface PreviousCacheImage {
  metadata: CacheMetadata;
  /** diffID → the layer's descriptor in the previous cache image. */
  layers: Map<Digest, Descriptor>;
}

/**
 * A cache image: an OCI image whose layers are the cached layer tars (gzip) and whose config carries the
 * cache metadata in the `io.buildpacks.lifecycle.cache.metadata` label and the target platform in
 * os/architecture/variant. A cache image of another platform is ignored (logged), never restored from.
 * Unchanged layers are reused by descriptor: the new manifest points at blobs the repository already has.
 */
export function openImageCache(opts: {
  store: ImageStore;
  tag: string;
  platform: Platform;
  logger: Logger;
  creationTime?: Date;
}): CacheBackend {
  const { store, tag, platform, logger } = opts;
  const description = `${store.description}:${tag}`;
  let previous: Promise<PreviousCacheImage> | undefined;
  const empty = (): PreviousCacheImage => ({ metadata: emptyCacheMetadata(), layers: new Map() });

  const load = async (): Promise<PreviousCacheImage> => {
    const found = await store.resolve(tag);
    if (!found) return empty();
    const m = await store.getManifest(tag);
    if (!isImageManifestMediaType(m.mediaType)) {
      logger.warn(`ignoring cache image ${description}: it is a ${m.mediaType}, not an image manifest`);
      return empty();
    }
    const manifest = parseWith(
      ImageManifestSchema,
      parseJson(m.bytes.toString('utf8'), description),
      description,
    );
    const configSource = `${description} config ${manifest.config.digest}`;
    const configBytes = await readCapped(
      await store.getBlob(manifest.config.digest),
      MAX_CONFIG_BYTES,
      configSource,
    );
    const config = parseWith(
      ImageConfigSchema,
      parseJson(configBytes.toString('utf8'), configSource),
      configSource,
    );
    const have = platformFromSpec(config);
    if (!platformsEqual(platform, have)) {
      logger.info(
        `Ignoring cache image ${description}: it was built for ${formatPlatform(have)}, this build targets ${formatPlatform(platform)}`,
      );
      return empty();
    }
    const label = config.config?.Labels?.[CACHE_METADATA_LABEL];
    let metadata = emptyCacheMetadata();
    if (label !== undefined) {
      try {
        metadata = parseCacheMetadata(label, `${configSource} label ${CACHE_METADATA_LABEL}`);
      } catch (err) {
        logger.warn(`ignoring cache image ${description}: ${(err as Error).message}`);
        return empty();
      }
    }
    const layers = new Map<Digest, Descriptor>();
    manifest.layers.forEach((d, i) => {
      const diffId = config.rootfs.diff_ids[i];
      if (diffId) layers.set(diffId, d);
    });
    return { metadata, layers };
  };
  const get = () => {
    previous ??= load();
    return previous;
  };

  return {
    description,
    compression: 'gzip',
    metadata: async () => (await get()).metadata,
    hasLayer: async (diffId) => (await get()).layers.has(diffId),
    // The registry checks blob digests on upload and download (as the reference lifecycle assumes too).
    verifyLayer: async () => undefined,
    async layer(diffId): Promise<Readable> {
      const d = (await get()).layers.get(diffId);
      if (!d)
        throw new PackfarmError('CACHE_LAYER_MISSING', `${description}: cached layer ${diffId} is missing`);
      return store.getBlob(d.digest);
    },
    async startWrite(writeOpts: { creationTime?: Date } = {}): Promise<CacheWriter> {
      const prev = await get();
      const tempDir = await makeTempDir(tmpdir(), 'cache');
      const layers: Descriptor[] = [];
      const diffIds: Digest[] = [];
      const seen = new Set<Digest>();
      const push = (diffId: Digest, d: Descriptor) => {
        // The same content cached by two layers needs one blob and one rootfs entry.
        if (seen.has(diffId)) return;
        seen.add(diffId);
        layers.push(d);
        diffIds.push(diffId);
      };
      return {
        tempDir,
        async reuse(diffId) {
          const d = prev.layers.get(diffId);
          if (!d) throw new Error(`cache image ${description} has no layer ${diffId}`);
          push(diffId, { mediaType: d.mediaType, digest: d.digest, size: d.size });
        },
        async add(file, layer) {
          if (!seen.has(layer.diffId)) {
            await store.putBlob({
              digest: layer.digest,
              size: layer.size,
              open: () => createReadStream(file),
            });
          }
          await rm(file, { force: true });
          push(layer.diffId, { mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size });
        },
        async commit(meta) {
          // A cache with nothing cached still gets one layer, the empty tar, as the reference writes it
          // (some registries refuse manifests without layers).
          if (layers.length === 0) await addEmptyLayer(store, push);
          const created = (writeOpts.creationTime ?? opts.creationTime ?? REPRODUCIBLE_EPOCH).toISOString();
          const config = {
            ...platformToSpec(platform),
            created,
            config: { Labels: { [CACHE_METADATA_LABEL]: canonicalJson(meta) } },
            rootfs: { type: 'layers', diff_ids: diffIds },
          };
          const configBytes = Buffer.from(canonicalJson(config));
          const configDigest = sha256Digest(configBytes);
          await store.putBlob({
            digest: configDigest,
            size: configBytes.length,
            open: () => Readable.from([configBytes]),
          });
          const manifest = {
            schemaVersion: 2,
            mediaType: MediaType.ociManifest,
            config: { mediaType: MediaType.ociConfig, digest: configDigest, size: configBytes.length },
            layers,
          };
          await store.putManifest({
            bytes: Buffer.from(canonicalJson(manifest)),
            mediaType: MediaType.ociManifest,
            tag,
          });
          await rm(tempDir, { recursive: true, force: true });
        },
        async abort() {
          await rm(tempDir, { recursive: true, force: true });
        },
      };
    },
    async clear() {
      // Registries may refuse deletes (RFC 0116): clearing means "do not read it"; the next export replaces it.
      previous = Promise.resolve(empty());
    },
  };
}
