import type { Digest } from '../oci/digest.js';
import { isImageManifestMediaType, isIndexMediaType } from '../oci/media-types.js';
import { formatPlatform, type Platform, platformFromSpec, platformsEqual } from '../oci/platform.js';
import { ImageConfigSchema, ImageIndexSchema, ImageManifestSchema } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { readCapped } from '../util/stream.js';
import { parseJson, parseWith } from '../util/validate.js';
import { runnableChildren } from './read.js';
import type { ImageStore } from './store.js';

/**
 * Which platforms an image offers, read without any layer: an index's runnable children (platform from their
 * descriptors), or a single image's platform (from its config). Planning a multi-target build uses it to pick
 * the child per target, and to say which platforms an image has when one is missing.
 */
export interface PlatformImage {
  platform: Platform;
  /** The image manifest for that platform. */
  digest: Digest;
}

export interface ImagePlatforms {
  /** The digest of what the reference names (the index, or the single image). */
  digest: Digest;
  isIndex: boolean;
  images: PlatformImage[];
}

const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

/** undefined when the target does not exist in the store. */
export async function imagePlatforms(store: ImageStore, target: string): Promise<ImagePlatforms | undefined> {
  const where = `${store.description}${target.includes(':') ? '@' : ':'}${target}`;
  if (!(await store.resolve(target))) return undefined;
  const top = await store.getManifest(target);
  if (isIndexMediaType(top.mediaType)) {
    const index = parseWith(ImageIndexSchema, parseJson(top.bytes.toString('utf8'), where), where);
    return {
      digest: top.digest,
      isIndex: true,
      images: runnableChildren(index).map((d) => ({
        platform: platformFromSpec(d.platform!),
        digest: d.digest as Digest,
      })),
    };
  }
  if (!isImageManifestMediaType(top.mediaType))
    throw new PackfarmError(
      'MANIFEST_INVALID',
      `${where}: ${top.mediaType} is neither an image nor an index`,
    );
  const m = parseWith(ImageManifestSchema, parseJson(top.bytes.toString('utf8'), where), where);
  const cfgWhere = `${where} config ${m.config.digest}`;
  const bytes = await readCapped(await store.getBlob(m.config.digest), MAX_CONFIG_BYTES, cfgWhere);
  const config = parseWith(ImageConfigSchema, parseJson(bytes.toString('utf8'), cfgWhere), cfgWhere);
  return {
    digest: top.digest,
    isIndex: false,
    images: [{ platform: platformFromSpec(config), digest: top.digest }],
  };
}

/**
 * The image for `target`: normalized exact matching (arm64 ≡ arm64/v8, x86_64 ≡ amd64, arm ≡ arm/v7), the
 * first matching entry winning as the image spec asks. No fallback to a merely compatible platform (amd64 →
 * 386, arm64 → arm): a target's image must be built for that target.
 */
export function pickPlatformImage(p: ImagePlatforms, target: Platform): PlatformImage | undefined {
  return p.images.find((i) => platformsEqual(target, i.platform));
}

/** `linux/amd64, linux/arm64` (sorted, deduplicated), or `no runnable images`. */
export function describePlatforms(p: ImagePlatforms): string {
  const names = [...new Set(p.images.map((i) => formatPlatform(i.platform)))].sort();
  return names.length > 0 ? names.join(', ') : 'no runnable images';
}
