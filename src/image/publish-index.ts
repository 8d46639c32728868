import type { Digest } from '../oci/digest.js';
import { isImageManifestMediaType } from '../oci/media-types.js';
import { ImageConfigSchema, ImageManifestSchema, type PlatformSpec } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { readCapped } from '../util/stream.js';
import { parseJson, parseWith } from '../util/validate.js';
import {
  type BuiltIndex,
  type IndexChild,
  type IndexFormat,
  buildIndex,
  normalizePlatformSpec,
} from './index-list.js';
import type { ImageStore } from './store.js';

/**
 * Publish one image index over images already in a store (written by digest, untagged): each child's
 * descriptor carries the platform read from that image's own config (os, architecture, variant, os.version,
 * os.features), children are sorted by platform (buildIndex), and the index is put under every tag — last,
 * so a tag never points at an index whose children are not all there. A tag that already names the same
 * index is left alone: a rebuild that changed nothing writes no manifest.
 */
export interface PublishIndexInput {
  store: ImageStore;
  /** The images: digests in `store` (platform read from their configs), or ready descriptors. */
  images: ReadonlyArray<Digest | IndexChild>;
  /** Tags to put the index under; none: the index is stored by digest only. */
  tags: readonly string[];
  /** Default 'oci'; 'docker' writes a Docker manifest list (every child must be a Docker manifest). */
  format?: IndexFormat;
  annotations?: Record<string, string>;
}

export interface PublishedIndex extends BuiltIndex {
  /** Tags that were (re)written; a tag already naming this index is not. */
  written: string[];
  children: IndexChild[];
}

const MAX_CONFIG_BYTES = 8 * 1024 * 1024;

export async function publishIndex(input: PublishIndexInput): Promise<PublishedIndex> {
  const children = await Promise.all(
    input.images.map((i) => (typeof i === 'string' ? indexChildOf(input.store, i) : i)),
  );
  const built = buildIndex(children, {
    ...(input.format ? { format: input.format } : {}),
    ...(input.annotations ? { annotations: input.annotations } : {}),
  });
  if (input.tags.length === 0) {
    if (!(await input.store.resolve(built.digest)))
      await input.store.putManifest({ bytes: built.bytes, mediaType: built.mediaType });
  }
  const written = await putUnderTags(input.store, built, input.tags);
  return { ...built, written, children };
}

export interface PublishedImages {
  /** The tagged manifest: the one image's own, or the index's. */
  digest: Digest;
  mediaType: string;
  size: number;
  /** Tags that were (re)written; a tag already naming the result is not. */
  written: string[];
  /** The images, as index descriptors (platform from each config), sorted by platform. */
  children: IndexChild[];
  /** The index, when there were several images. */
  index?: PublishedIndex;
}

/**
 * What `builder create` and `buildpack package` publish (as pack does): one image is tagged as it is, its
 * own manifest under every tag (no index of one); several images get an index (publishIndex). Either way a
 * tag already naming the result is left alone, and the image must be an image manifest in `store`.
 */
export async function publishImages(input: PublishIndexInput): Promise<PublishedImages> {
  if (input.images.length !== 1) {
    const index = await publishIndex(input);
    return {
      digest: index.digest,
      mediaType: index.mediaType,
      size: index.size,
      written: index.written,
      children: index.children,
      index,
    };
  }
  const only = input.images[0]!;
  const { child, bytes } = await readChild(input.store, typeof only === 'string' ? only : only.digest);
  const written = await putUnderTags(
    input.store,
    { bytes, digest: child.digest, mediaType: child.mediaType },
    input.tags,
  );
  return { digest: child.digest, mediaType: child.mediaType, size: child.size, written, children: [child] };
}

/** Put a manifest under each tag that does not already name it (last, after everything it refers to). */
async function putUnderTags(
  store: ImageStore,
  m: { bytes: Buffer; digest: Digest; mediaType: string },
  tags: readonly string[],
): Promise<string[]> {
  const written: string[] = [];
  for (const tag of tags) {
    // resolve() says "absent" with undefined; any other failure (auth, network) is the caller's to see.
    const current = await store.resolve(tag);
    if (current?.digest === m.digest) continue;
    await store.putManifest({ bytes: m.bytes, mediaType: m.mediaType, tag });
    written.push(tag);
  }
  return written;
}

/** The index descriptor of an image in `store`: its manifest's media type and size, its config's platform. */
export async function indexChildOf(store: ImageStore, digest: Digest): Promise<IndexChild> {
  return (await readChild(store, digest)).child;
}

async function readChild(store: ImageStore, digest: Digest): Promise<{ child: IndexChild; bytes: Buffer }> {
  const where = `${store.description}@${digest}`;
  const m = await store.getManifest(digest);
  if (!isImageManifestMediaType(m.mediaType))
    throw new PackfarmError('MANIFEST_INVALID', `${where}: ${m.mediaType} is not an image manifest`, {
      hint: 'an index built by packfarm lists image manifests, one per platform',
    });
  const manifest = parseWith(ImageManifestSchema, parseJson(m.bytes.toString('utf8'), where), where);
  const cfgWhere = `${where} config ${manifest.config.digest}`;
  const bytes = await readCapped(await store.getBlob(manifest.config.digest), MAX_CONFIG_BYTES, cfgWhere);
  const config = parseWith(ImageConfigSchema, parseJson(bytes.toString('utf8'), cfgWhere), cfgWhere);
  const platform: PlatformSpec = normalizePlatformSpec({
    os: config.os,
    architecture: config.architecture,
    ...(config.variant ? { variant: config.variant } : {}),
    ...(config['os.version'] ? { 'os.version': config['os.version'] } : {}),
    ...(config['os.features'] ? { 'os.features': config['os.features'] } : {}),
  });
  return { child: { mediaType: m.mediaType, digest, size: m.bytes.length, platform }, bytes: m.bytes };
}
