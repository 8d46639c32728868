import { type Digest, sha256Digest } from '../oci/digest.js';
import { MediaType, isDockerMediaType } from '../oci/media-types.js';
import { comparePlatforms, platformFromSpec, platformToSpec } from '../oci/platform.js';
import type { ImageIndex, PlatformSpec } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { canonicalJson } from '../util/json.js';

/**
 * Building image indexes (OCI) and manifest lists (Docker) from child descriptors.
 *
 * The output depends only on the set of children: they are sorted by normalized platform
 * (comparePlatforms), then os.features, then digest; children without a platform come last; the JSON is
 * canonical (sorted keys, compact). So the same images give the same index digest whatever order they were
 * collected in.
 */
export type IndexFormat = 'oci' | 'docker';

export interface IndexChild {
  mediaType: string;
  digest: Digest;
  size: number;
  platform?: PlatformSpec;
  annotations?: Record<string, string>;
  artifactType?: string;
}

export interface BuiltIndex {
  /** The exact bytes to push; `digest` is their sha256. */
  bytes: Buffer;
  digest: Digest;
  mediaType: string;
  size: number;
  document: ImageIndex;
  /** Things dropped on the way (annotations in a Docker list), for the caller to show. */
  warnings: string[];
}

export interface BuildIndexOptions {
  /** Default 'oci'. 'docker' needs every child to be a Docker image manifest with a platform. */
  format?: IndexFormat;
  /** Index-level annotations (OCI only). */
  annotations?: Record<string, string>;
}

/** The buildx rule: a Docker list when every child is Docker-typed (and there is at least one), else OCI. */
export function preferredIndexFormat(children: readonly IndexChild[]): IndexFormat {
  return children.length > 0 && children.every((c) => c.mediaType === MediaType.dockerManifest)
    ? 'docker'
    : 'oci';
}

/** Normalized platform as written into descriptors: the config's values through containerd-style rules. */
export function normalizePlatformSpec(spec: PlatformSpec): PlatformSpec {
  const normalized = platformToSpec(platformFromSpec(spec));
  const out: PlatformSpec = { ...spec, ...normalized };
  if (!normalized.variant) delete out.variant;
  if (spec['os.features'] !== undefined) out['os.features'] = [...new Set(spec['os.features'])].sort();
  if (spec.features !== undefined) out.features = [...new Set(spec.features)].sort();
  return out;
}

function compareChildren(a: IndexChild, b: IndexChild): number {
  if (a.platform && !b.platform) return -1;
  if (!a.platform && b.platform) return 1;
  if (a.platform && b.platform) {
    const c = comparePlatforms(platformFromSpec(a.platform), platformFromSpec(b.platform));
    if (c !== 0) return c;
    const fa = (a.platform['os.features'] ?? []).join(',');
    const fb = (b.platform['os.features'] ?? []).join(',');
    if (fa !== fb) return fa < fb ? -1 : 1;
  }
  return a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0;
}

/** Children in index order, duplicates (same digest, same descriptor) merged. */
export function sortIndexChildren(children: readonly IndexChild[]): IndexChild[] {
  const byDigest = new Map<string, IndexChild>();
  for (const raw of children) {
    const child = raw.platform ? { ...raw, platform: normalizePlatformSpec(raw.platform) } : { ...raw };
    const seen = byDigest.get(child.digest);
    if (seen && canonicalJson(seen) !== canonicalJson(child))
      throw new PackfarmError(
        'DUPLICATE_CHILD',
        `${child.digest} appears twice in the index with different descriptors (platform or annotations differ)`,
        { hint: 'an index lists each manifest once; annotate the existing entry instead' },
      );
    byDigest.set(child.digest, child);
  }
  return [...byDigest.values()].sort(compareChildren);
}

export function buildIndex(children: readonly IndexChild[], opts: BuildIndexOptions = {}): BuiltIndex {
  const format = opts.format ?? 'oci';
  const sorted = sortIndexChildren(children);
  const warnings: string[] = [];
  let document: ImageIndex;
  if (format === 'docker') {
    const notDocker = sorted.filter((c) => c.mediaType !== MediaType.dockerManifest);
    if (notDocker.length > 0)
      throw new PackfarmError(
        'INDEX_FORMAT_MISMATCH',
        `a Docker manifest list can only hold Docker image manifests; ${notDocker
          .map((c) => `${c.digest} is ${c.mediaType}`)
          .join(', ')}`,
        { hint: 'use the OCI format (--format oci), or copy the images as Docker v2 schema 2 first' },
      );
    const noPlatform = sorted.filter((c) => !c.platform);
    if (noPlatform.length > 0)
      throw new PackfarmError(
        'INDEX_FORMAT_MISMATCH',
        `every entry of a Docker manifest list needs a platform; ${noPlatform.map((c) => c.digest).join(', ')} has none`,
        { hint: 'set it with `packfarm manifest annotate --os … --arch …`' },
      );
    if (sorted.some((c) => c.annotations && Object.keys(c.annotations).length > 0))
      warnings.push('annotations on entries are dropped: Docker manifest lists have no annotations');
    if (opts.annotations && Object.keys(opts.annotations).length > 0)
      warnings.push('index annotations are dropped: Docker manifest lists have no annotations');
    document = {
      schemaVersion: 2,
      mediaType: MediaType.dockerManifestList,
      manifests: sorted.map((c) => ({
        mediaType: c.mediaType,
        digest: c.digest,
        size: c.size,
        platform: c.platform,
      })),
    };
  } else {
    const mixed = sorted.filter((c) => isDockerMediaType(c.mediaType));
    if (mixed.length > 0 && mixed.length < sorted.length)
      warnings.push(
        'the index mixes Docker and OCI manifests; some registries (older Quay) reject such indexes',
      );
    document = {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: sorted.map((c) => ({
        mediaType: c.mediaType,
        digest: c.digest,
        size: c.size,
        ...(c.platform ? { platform: c.platform } : {}),
        ...(c.artifactType ? { artifactType: c.artifactType } : {}),
        ...(c.annotations && Object.keys(c.annotations).length > 0 ? { annotations: c.annotations } : {}),
      })),
      ...(opts.annotations && Object.keys(opts.annotations).length > 0
        ? { annotations: opts.annotations }
        : {}),
    };
  }
  const bytes = Buffer.from(canonicalJson(document));
  return {
    bytes,
    digest: sha256Digest(bytes),
    mediaType: document.mediaType as string,
    size: bytes.length,
    document,
    warnings,
  };
}
