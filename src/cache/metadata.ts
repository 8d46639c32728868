import { z } from 'zod';
import { formatPlatform, normalizePlatform, type Platform } from '../oci/platform.js';
import {
  type BuildpackLayerMetadata,
  BuildpackLayersMetadataSchema,
  LayerShaSchema,
} from '../platform/labels.js';
import { PackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';

/**
 * The name of the cache metadata record: the image cache's config label and the dir cache's metadata file
 * (the names the reference lifecycle uses, so the records look the same to anyone reading them).
 */
export const CACHE_METADATA_LABEL = 'io.buildpacks.lifecycle.cache.metadata';

/**
 * What a cache holds: per buildpack (`key` = id), per layer the diffID (`sha`) of the cached tar and the
 * `<layer>.toml` content (`data` = [metadata], plus the types). Same shape as the app image label's
 * `buildpacks` array, so the restorer compares the two directly.
 */
export const CacheMetadataSchema = z.looseObject({
  sbom: LayerShaSchema.optional(),
  buildpacks: z.array(BuildpackLayersMetadataSchema).default([]),
});
export type CacheMetadata = z.output<typeof CacheMetadataSchema>;

export function emptyCacheMetadata(): CacheMetadata {
  return { buildpacks: [] };
}

/** Parse a metadata record (JSON text); errors name `source` and the field. */
export function parseCacheMetadata(text: string, source: string): CacheMetadata {
  return parseWith(CacheMetadataSchema, parseJson(text, source), source, 'INVALID_CACHE_METADATA');
}

/** The layers a cache holds for one buildpack (empty when the buildpack is not in it). */
export function cachedLayersFor(
  meta: CacheMetadata,
  buildpackId: string,
): Record<string, BuildpackLayerMetadata> {
  return meta.buildpacks.find((b) => b.key === buildpackId)?.layers ?? {};
}

/**
 * The per-platform key of a cache: `linux-amd64`, `linux-arm-v7`. Safe as one path component; normalised so
 * `linux/aarch64` and `linux/arm64/v8` share a cache.
 */
export function cachePlatformKey(p: Platform): string {
  const n = normalizePlatform(p);
  for (const part of [n.os, n.architecture, n.variant ?? '']) {
    if (!/^[a-z0-9_.]*$/.test(part))
      throw new PackfarmError(
        'INVALID_PLATFORM',
        `cache: platform "${formatPlatform(p)}" cannot key a cache`,
      );
  }
  return [n.os, n.architecture, ...(n.variant ? [n.variant] : [])].join('-');
}
