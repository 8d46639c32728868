import { selectIndexChild } from './read.js';
import pLimit from 'p-limit';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { isImageManifestMediaType, isIndexMediaType } from '../oci/media-types.js';
import { type Platform, formatPlatform, hostPlatform, platformFromSpec } from '../oci/platform.js';
import { type Descriptor, ImageIndexSchema, ImageManifestSchema } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { canonicalJson } from '../util/json.js';
import { parseJson, parseWith } from '../util/validate.js';
import type { ImageStore, PutBlobResult, StoredManifest } from './store.js';

export type CopyEvent =
  | { type: 'blob'; digest: Digest; size: number; mediaType: string; outcome: PutBlobResult['outcome'] }
  | {
      type: 'manifest';
      digest: Digest;
      mediaType: string;
      size: number;
      outcome: 'exists' | 'pushed';
      tag?: string;
    };

export interface CopyOptions {
  src: ImageStore;
  /** Tag or digest in `src`. */
  srcTarget: string;
  dst: ImageStore;
  /** Tag to write at the destination, last. Without it the image is stored by digest only. */
  dstTag?: string;
  /** For an index: copy every child (and nested indexes) and the index itself. */
  all?: boolean;
  /**
   * For an index without `all`: the platforms wanted (default: this host's). One platform copies just the
   * matching image; several copy a new index holding only the matching children (a new digest).
   */
  platforms?: Platform[];
  /** Blob transfers (and manifest fetches) in flight at once; default 4. */
  concurrency?: number;
  onProgress?: (event: CopyEvent) => void;
  /** Aborting stops the copy before its next blob or manifest (the tag is written last, so never). */
  signal?: AbortSignal;
}

export interface CopyReport {
  /** What was written at the destination (and tagged, if dstTag). */
  digest: Digest;
  mediaType: string;
  size: number;
  tag?: string;
  /** Set when an image was picked out of a source index. */
  selectedFrom?: { index: Digest; platforms: string[]; filtered: boolean };
  /** Image manifests that were copied (or found present), with their platforms where known. */
  images: Array<{ digest: Digest; platform?: string }>;
  manifests: { pushed: number; exists: number };
  blobs: { exists: number; mounted: number; uploaded: number };
  /** Bytes of blobs that were uploaded (mounted and existing ones move none). */
  bytesUploaded: number;
}

/**
 * Copy an image or an index from one store to another, byte for byte (digests never change, except for the
 * deliberately new index of a multi-platform selection). Order: blobs, then each image manifest by digest,
 * then child indexes, then the top manifest, and the tag last. Blobs already at the destination are skipped;
 * between two repositories of one registry they are mounted instead of uploaded.
 */
export async function copyImage(opts: CopyOptions): Promise<CopyReport> {
  const { src, dst } = opts;
  const limit = pLimit(Math.max(1, opts.concurrency ?? 4));
  const report: CopyReport = {
    digest: '' as Digest,
    mediaType: '',
    size: 0,
    images: [],
    manifests: { pushed: 0, exists: 0 },
    blobs: { exists: 0, mounted: 0, uploaded: 0 },
    bytesUploaded: 0,
  };
  const emit = (e: CopyEvent) => opts.onProgress?.(e);
  const mountFrom =
    src.registryRepository &&
    dst.registryRepository &&
    src.registryRepository.registry === dst.registryRepository.registry &&
    src.registryRepository.repository !== dst.registryRepository.repository
      ? src.registryRepository
      : undefined;

  const blobJobs = new Map<string, Promise<void>>();
  const copyBlob = (d: Descriptor): Promise<void> => {
    let job = blobJobs.get(d.digest);
    if (!job) {
      const digest = d.digest as Digest;
      job = limit(async () => {
        opts.signal?.throwIfAborted();
        const result = await dst.putBlob({
          digest,
          size: d.size,
          open: () => src.getBlob(digest),
          ...(mountFrom ? { mountFrom } : {}),
        });
        report.blobs[result.outcome]++;
        if (result.outcome === 'uploaded') report.bytesUploaded += result.size;
        emit({ type: 'blob', digest, size: result.size, mediaType: d.mediaType, outcome: result.outcome });
      });
      blobJobs.set(d.digest, job);
    }
    return job;
  };

  const fetchManifest = (target: string) => limit(() => src.getManifest(target));

  const nodeJobs = new Map<string, Promise<void>>();
  /** Copy one manifest and everything below it, without a tag. */
  const copyNode = (m: StoredManifest, platform?: string): Promise<void> => {
    let job = nodeJobs.get(m.digest);
    if (!job) {
      job = (async () => {
        if (isImageManifestMediaType(m.mediaType))
          report.images.push({ digest: m.digest, ...(platform ? { platform } : {}) });
        if (await limit(() => dst.resolve(m.digest))) {
          report.manifests.exists++;
          emit({
            type: 'manifest',
            digest: m.digest,
            mediaType: m.mediaType,
            size: m.bytes.length,
            outcome: 'exists',
          });
          return;
        }
        await copyChildren(m);
        opts.signal?.throwIfAborted();
        await limit(() => dst.putManifest({ bytes: m.bytes, mediaType: m.mediaType }));
        report.manifests.pushed++;
        emit({
          type: 'manifest',
          digest: m.digest,
          mediaType: m.mediaType,
          size: m.bytes.length,
          outcome: 'pushed',
        });
      })();
      nodeJobs.set(m.digest, job);
    }
    return job;
  };

  const copyChildren = async (m: StoredManifest): Promise<void> => {
    const source = `${src.description}@${m.digest}`;
    if (isImageManifestMediaType(m.mediaType)) {
      const manifest = parseWith(ImageManifestSchema, parseJson(m.bytes.toString('utf8'), source), source);
      // Non-distributable layers (with urls) stay where their urls say.
      const blobs = [manifest.config, ...manifest.layers].filter((d) => !(d.urls && d.urls.length > 0));
      await Promise.all(blobs.map(copyBlob));
    } else if (isIndexMediaType(m.mediaType)) {
      const index = parseWith(ImageIndexSchema, parseJson(m.bytes.toString('utf8'), source), source);
      await Promise.all(
        index.manifests.map(async (child) => {
          const childManifest = await fetchManifest(child.digest);
          checkDescriptor(child, childManifest, source);
          await copyNode(
            childManifest,
            child.platform ? formatPlatform(platformFromSpec(child.platform)) : undefined,
          );
        }),
      );
    } else {
      throw new PackfarmError(
        'UNSUPPORTED_MEDIA_TYPE',
        `${source}: cannot copy a manifest of media type ${m.mediaType}`,
        { hint: 'only OCI and Docker v2 image manifests and indexes can be copied' },
      );
    }
  };

  let top = await fetchManifest(opts.srcTarget);
  let topPlatform: string | undefined;
  if (isIndexMediaType(top.mediaType) && !opts.all) {
    const picked = await selectFromIndex(src, top, opts.platforms ?? [hostPlatform()], fetchManifest);
    report.selectedFrom = picked.selectedFrom;
    top = picked.manifest;
    topPlatform = picked.platform;
  }
  if (isImageManifestMediaType(top.mediaType))
    report.images.push({ digest: top.digest, ...(topPlatform ? { platform: topPlatform } : {}) });

  // The top manifest is written once, with its tag, after everything below it.
  opts.signal?.throwIfAborted();
  const tag = opts.dstTag;
  const manifestEvent = (outcome: 'exists' | 'pushed', withTag?: string): CopyEvent => ({
    type: 'manifest',
    digest: top.digest,
    mediaType: top.mediaType,
    size: top.bytes.length,
    outcome,
    ...(withTag !== undefined ? { tag: withTag } : {}),
  });
  if (await dst.resolve(top.digest)) {
    report.manifests.exists++;
    emit(manifestEvent('exists'));
    if (tag !== undefined && (await dst.resolve(tag))?.digest !== top.digest) {
      await dst.putManifest({ bytes: top.bytes, mediaType: top.mediaType, tag });
      emit(manifestEvent('pushed', tag));
    }
  } else {
    await copyChildren(top);
    await dst.putManifest({
      bytes: top.bytes,
      mediaType: top.mediaType,
      ...(tag !== undefined ? { tag } : {}),
    });
    report.manifests.pushed++;
    emit(manifestEvent('pushed', tag));
  }
  if (tag !== undefined) report.tag = tag;
  report.digest = top.digest;
  report.mediaType = top.mediaType;
  report.size = top.bytes.length;
  return report;
}

/** A fetched child must be what its parent's descriptor says (a registry could serve something else by tag). */
function checkDescriptor(d: Descriptor, m: StoredManifest, parent: string): void {
  if (m.digest !== d.digest || m.bytes.length !== d.size)
    throw new PackfarmError(
      'MANIFEST_INVALID',
      `${parent}: child ${d.digest} (${d.size} bytes) was served as ${m.digest} (${m.bytes.length} bytes)`,
    );
}

async function selectFromIndex(
  src: ImageStore,
  top: StoredManifest,
  platforms: Platform[],
  fetchManifest: (target: string) => Promise<StoredManifest>,
): Promise<{
  manifest: StoredManifest;
  platform?: string;
  selectedFrom: NonNullable<CopyReport['selectedFrom']>;
}> {
  const source = `${src.description}@${top.digest}`;
  const index = parseWith(ImageIndexSchema, parseJson(top.bytes.toString('utf8'), source), source);
  const picked: Descriptor[] = [];
  for (const want of platforms) {
    const hit = selectIndexChild(
      index,
      want,
      source,
      'pick one with --platform, or copy every platform with --all',
    );
    if (!picked.includes(hit)) picked.push(hit);
  }
  const names = platforms.map(formatPlatform);
  if (platforms.length === 1) {
    const d = picked[0]!;
    const child = await fetchManifest(d.digest);
    checkDescriptor(d, child, source);
    if (isIndexMediaType(child.mediaType)) {
      // A nested index for that platform: pick inside it as well.
      const inner = await selectFromIndex(src, child, platforms, fetchManifest);
      return { ...inner, selectedFrom: { index: top.digest, platforms: names, filtered: false } };
    }
    return {
      manifest: child,
      platform: formatPlatform(platformFromSpec(d.platform!)),
      selectedFrom: { index: top.digest, platforms: names, filtered: false },
    };
  }
  // Several platforms: a new index with only those children, keeping the source's other fields and order.
  const kept = index.manifests.filter((d) => picked.includes(d));
  const bytes = Buffer.from(canonicalJson({ ...index, manifests: kept }));
  return {
    manifest: { bytes, mediaType: top.mediaType, digest: sha256Digest(bytes) },
    selectedFrom: { index: top.digest, platforms: names, filtered: true },
  };
}
