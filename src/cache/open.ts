import type { Readable } from 'node:stream';
import type { ImageStore } from '../image/store.js';
import type { Digest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import { type Logger, silentLogger } from '../util/log.js';
import { openDirCache } from './dir-cache.js';
import { openImageCache } from './image-cache.js';
import type { CacheMetadata } from './metadata.js';
import type { CacheBackend } from './types.js';

/** Where a build cache lives: a directory (`-cache-dir`) or an image tag in a store (`-cache-image`). */
export type CacheLocation = { kind: 'dir'; dir: string } | { kind: 'image'; store: ImageStore; tag: string };

/** Where launch layers live inside the app image; cached tars use the same paths (see spec/cache.md). */
export const DEFAULT_IMAGE_LAYERS_DIR = '/layers';

/** A cache opened for one target platform, read side. */
export interface OpenedCache {
  readonly description: string;
  readonly platform: Platform;
  /** The cache's record of layers; empty when there is no cache yet, it is another platform's, or it was cleared. */
  metadata(): Promise<CacheMetadata>;
  hasLayer(diffId: Digest): Promise<boolean>;
  /** The cached layer's bytes (plain tar or gzip; `extractLayer` detects which). */
  layer(diffId: Digest): Promise<Readable>;
  /** Forget the cache's contents (dir cache: deleted; image cache: ignored, replaced by the next export). */
  clear(): Promise<void>;
  /** @internal the backend, for exportCache. */
  readonly backend: CacheBackend;
}

export interface OpenCacheOptions {
  logger?: Logger;
  /** `--clear-cache`: start from an empty cache (and delete a dir cache's platform subdirectory). */
  clear?: boolean;
  /** Stamp of the cache image's config (default 1980-01-01T00:00:01Z, for reproducible cache images). */
  creationTime?: Date;
}

export async function openCache(
  location: CacheLocation,
  target: Platform,
  opts: OpenCacheOptions = {},
): Promise<OpenedCache> {
  const logger = opts.logger ?? silentLogger;
  const backend =
    location.kind === 'dir'
      ? openDirCache(location.dir, target, logger)
      : openImageCache({
          store: location.store,
          tag: location.tag,
          platform: target,
          logger,
          ...(opts.creationTime ? { creationTime: opts.creationTime } : {}),
        });
  if (opts.clear) await backend.clear();
  return {
    description: backend.description,
    platform: target,
    metadata: () => backend.metadata(),
    hasLayer: (d) => backend.hasLayer(d),
    layer: (d) => backend.layer(d),
    clear: () => backend.clear(),
    backend,
  };
}
