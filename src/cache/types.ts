import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import type { CacheMetadata } from './metadata.js';

/** A cached layer file the exporter wrote, with the digests the archive writer computed in the same pass. */
export interface CachedLayerFile {
  diffId: Digest;
  /** Digest and size of the file as written (equal to diffId for an uncompressed tar). */
  digest: Digest;
  size: number;
}

/** One export into a cache: blobs go to a staging area; nothing is visible to readers before `commit`. */
export interface CacheWriter {
  /** Where the exporter writes layer files before `add` (same filesystem as the cache when it is a dir). */
  tempDir: string;
  /** Keep a layer the committed cache already holds, without re-reading or re-uploading it. */
  reuse(diffId: Digest): Promise<void>;
  /** Move/upload a freshly written layer file into the new cache. The file is consumed. */
  add(file: string, layer: CachedLayerFile): Promise<void>;
  commit(meta: CacheMetadata): Promise<void>;
  /** Drop everything staged (safe after commit: then a no-op). */
  abort(): Promise<void>;
}

/** What both cache kinds implement (internal; callers use `openCache` / `exportCache`). */
export interface CacheBackend {
  readonly description: string;
  /** How layer files for this cache are written: the dir cache keeps plain tars, the image cache gzip. */
  readonly compression: 'none' | 'gzip';
  metadata(): Promise<CacheMetadata>;
  hasLayer(diffId: Digest): Promise<boolean>;
  /**
   * Why a layer the cache claims to hold cannot be reused (missing, unreadable, content not matching its
   * diffID), or undefined when it can. The image cache trusts the registry's digest checks.
   */
  verifyLayer(diffId: Digest): Promise<string | undefined>;
  /**
   * The stat data of a cached layer file (device, inode, size, mtime and ctime in ns), for a build dir to
   * remember it verified that file (phase/layer-state.ts); undefined when the layer is absent or the cache
   * has no files (the image cache).
   */
  layerStamp?(diffId: Digest): Promise<string | undefined>;
  /** The layer's bytes (plain tar or gzip; `extractLayer` detects which). */
  layer(diffId: Digest): Promise<Readable>;
  /** `creationTime` stamps what the export records (the image cache's config `created`). */
  startWrite(opts?: { creationTime?: Date }): Promise<CacheWriter>;
  clear(): Promise<void>;
}
