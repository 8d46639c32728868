import { type Digest, sha256Digest } from '../oci/digest.js';
import { isIndexMediaType } from '../oci/media-types.js';
import {
  compatiblePlatforms,
  formatPlatform,
  hostPlatform,
  type Platform,
  platformFromSpec,
  platformsEqual,
} from '../oci/platform.js';
import {
  type Descriptor,
  type ImageConfig,
  ImageConfigSchema,
  type ImageIndex,
  ImageIndexSchema,
  type ImageManifest,
  ImageManifestSchema,
} from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';
import type { ImageStore } from './store.js';

/**
 * Reading images: one image for a platform (manifest and config, never layers), and the choice of an index's
 * child for a platform, used by build, export, rebase, copy, inspect and sbom alike.
 */

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

export interface ReadImageOptions {
  /** The image's name in messages (default: the store's description). */
  name?: string;
  /** Hint when an index has no child for the platform. */
  hint?: string;
}

/**
 * Read the image `target` names in `store` for `platform`: an image manifest directly (its config must be
 * for that platform when one is given), or the matching child of an index (for `platform`, by default this
 * machine's, as docker and podman pull). Only manifest and config are read; layers never are.
 */
export async function readBaseImage(
  store: ImageStore,
  target: string,
  platform?: Platform,
  opts: ReadImageOptions = {},
): Promise<BaseImage> {
  const top = await store.getManifest(target);
  let stored = top;
  const source = `${opts.name ?? store.description}@${top.digest}`;
  if (isIndexMediaType(top.mediaType)) {
    const index = parseWith(ImageIndexSchema, parseJson(top.bytes.toString('utf8'), source), source);
    const want = platform ?? hostPlatform();
    const hit = selectIndexChild(index, want, source, opts.hint);
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
      throw new PackfarmError('TOO_LARGE', `${store.description}: blob ${digest} exceeds ${max} bytes`);
    }
    chunks.push(b);
  }
  return Buffer.concat(chunks);
}

/** Children that can stand for a platform: runnable images, not attestations or unknown/unknown. */
export function runnableChildren(index: ImageIndex): Descriptor[] {
  return index.manifests.filter(
    (d) =>
      d.platform !== undefined &&
      d.platform.os !== 'unknown' &&
      d.platform.architecture !== 'unknown' &&
      d.annotations?.['vnd.docker.reference.type'] === undefined,
  );
}

/**
 * The child of `index` to use for `want`: exact platform first, then what a `want` machine also runs
 * (containerd's preference order), first entry winning among equals as the image spec asks.
 */
export function matchPlatform(index: ImageIndex, want: Platform): Descriptor | undefined {
  const candidates = runnableChildren(index);
  for (const p of compatiblePlatforms(want)) {
    const hit = candidates.find((d) => platformsEqual(p, platformFromSpec(d.platform!)));
    if (hit) return hit;
  }
  return undefined;
}

/** `matchPlatform`, or NO_MATCHING_PLATFORM naming what the index (`source`) has instead. */
export function selectIndexChild(
  index: ImageIndex,
  want: Platform,
  source: string,
  hint?: string,
): Descriptor {
  const hit = matchPlatform(index, want);
  if (hit) return hit;
  const have = runnableChildren(index).map((d) => formatPlatform(platformFromSpec(d.platform!)));
  throw new PackfarmError(
    'NO_MATCHING_PLATFORM',
    `${source}: no image for ${formatPlatform(want)} (the index has ${have.join(', ') || 'no runnable images'})`,
    hint === undefined ? {} : { hint },
  );
}
