import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';

/** A manifest or index exactly as stored: its digest is always the sha256 of `bytes`. */
export interface StoredManifest {
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

export interface BlobRef {
  digest: Digest;
  size: number;
}

export interface PutBlobInput {
  /** Known digest/size let the store skip an existing blob without reading the source at all. */
  digest?: Digest;
  size?: number;
  /** Opened only when the bytes are really needed. */
  open: () => Readable | Promise<Readable>;
  /**
   * Another repository on the same registry that holds this blob: a registry store tries a cross-repository
   * mount first. Ignored by stores that have no such notion.
   */
  mountFrom?: { registry: string; repository: string };
}

export interface PutBlobResult extends BlobRef {
  /** How the blob got there: already present, mounted from another repository, or uploaded. */
  outcome: 'exists' | 'mounted' | 'uploaded';
}

/**
 * One repository of images: a repository in a registry, or an OCI image layout directory. Everything that
 * reads or writes images goes through this interface, so every command works with both.
 * `target` is a tag or a digest.
 */
export interface ImageStore {
  /** For messages: `registry.example/app` or `oci:/path`. */
  readonly description: string;
  /** Registry + repository when the store is a registry repository (enables cross-repository mounts). */
  readonly registryRepository?: { registry: string; repository: string };

  hasBlob(digest: Digest): Promise<boolean>;
  /** The blob's bytes; the stream errors if they do not hash to `digest`. */
  getBlob(digest: Digest): Promise<Readable>;
  putBlob(input: PutBlobInput): Promise<PutBlobResult>;

  /** undefined when the target does not exist. */
  resolve(target: string): Promise<{ digest: Digest; mediaType: string; size: number } | undefined>;
  /** Throws a PackfarmError with code MANIFEST_UNKNOWN when absent. Verifies the digest when fetched by digest. */
  getManifest(target: string): Promise<StoredManifest>;
  /**
   * Store `bytes` (never re-serialised) under their digest, and under `tag` when given. Every blob and child
   * manifest it references must already be in the store.
   */
  putManifest(input: { bytes: Buffer; mediaType: string; tag?: string }): Promise<Digest>;
  listTags(): Promise<string[]>;
  /**
   * Check that this store may be written, without writing (a registry: a push-scoped upload session opened and
   * cancelled). Rejects with the store's error. Absent for stores that need no such check (OCI layouts).
   */
  checkWriteAccess?(): Promise<void>;
}
