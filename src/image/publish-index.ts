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
  const written: string[] = [];
  if (input.tags.length === 0) {
    if (!(await input.store.resolve(built.digest)))
      await input.store.putManifest({ bytes: built.bytes, mediaType: built.mediaType });
  }
  for (const tag of input.tags) {
    // resolve() says "absent" with undefined; any other failure (auth, network) is the caller's to see.
    const current = await input.store.resolve(tag);
    if (current?.digest === built.digest) continue;
    await input.store.putManifest({ bytes: built.bytes, mediaType: built.mediaType, tag });
    written.push(tag);
  }
  return { ...built, written, children };
}

/** The index descriptor of an image in `store`: its manifest's media type and size, its config's platform. */
export async function indexChildOf(store: ImageStore, digest: Digest): Promise<IndexChild> {
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
  return { mediaType: m.mediaType, digest, size: m.bytes.length, platform };
}
