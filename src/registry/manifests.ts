import { createHash } from 'node:crypto';
import { type Digest, digestAlgorithm, isDigest, sha256Digest } from '../oci/digest.js';
import { MANIFEST_ACCEPT, MediaType, isManifestMediaType } from '../oci/media-types.js';
import { PackfarmError } from '../util/errors.js';
import { type RegistryClient, type RegistryResponse, headerValue } from './client.js';
import { displayUrl } from './errors.js';
import { repositoryScope } from './scope.js';

/** Registries must accept manifests of at least 4 MiB; we read no more than that. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

export interface FetchedManifest {
  /** Exactly as served: the digest is of these bytes. */
  bytes: Buffer;
  mediaType: string;
  digest: Digest;
}

export interface ManifestHead {
  digest: Digest;
  mediaType: string;
  size: number;
}

const ACCEPT = MANIFEST_ACCEPT.join(', ');

function manifestPath(repository: string, target: string): string {
  return `/v2/${repository}/manifests/${encodeURIComponent(target).replace(/%3A/gi, ':')}`;
}

function contentType(res: RegistryResponse): string | undefined {
  const v = headerValue(res.headers['content-type']);
  return v?.split(';')[0]?.trim().toLowerCase() || undefined;
}

export function digestOfBytes(bytes: Uint8Array, algorithm = 'sha256'): Digest {
  if (algorithm === 'sha256') return sha256Digest(bytes);
  return `${algorithm}:${createHash(algorithm).update(bytes).digest('hex')}`;
}

/**
 * The media type of a served manifest. The document's own `mediaType` must agree with a manifest
 * Content-Type (the distribution spec tells clients to reject a disagreement); a document without
 * `mediaType` (allowed by OCI) takes the Content-Type, or, behind a generic one, is recognised by shape.
 */
function manifestMediaType(bytes: Buffer, headerType: string | undefined, where: string): string {
  let doc: { mediaType?: unknown; schemaVersion?: unknown; manifests?: unknown; config?: unknown };
  try {
    doc = JSON.parse(bytes.toString('utf8'));
  } catch (err) {
    throw new PackfarmError('MANIFEST_INVALID', `${where}: the manifest is not valid JSON`, { cause: err });
  }
  if (!doc || typeof doc !== 'object') {
    throw new PackfarmError('MANIFEST_INVALID', `${where}: the manifest is not a JSON object`);
  }
  if (doc.schemaVersion === 1) {
    throw new PackfarmError('MANIFEST_UNSUPPORTED', `${where}: Docker schema 1 manifests are not supported`, {
      hint: 'push the image again with a current tool (it will be schema 2 or OCI)',
    });
  }
  const own = typeof doc.mediaType === 'string' ? doc.mediaType : undefined;
  if (own !== undefined) {
    if (headerType !== undefined && isManifestMediaType(headerType) && headerType !== own) {
      throw new PackfarmError(
        'MANIFEST_INVALID',
        `${where}: served with Content-Type ${headerType} but the document says mediaType ${own}`,
      );
    }
    return own;
  }
  if (headerType !== undefined && isManifestMediaType(headerType)) return headerType;
  if (Array.isArray(doc.manifests)) return MediaType.ociIndex;
  if (doc.config && typeof doc.config === 'object') return MediaType.ociManifest;
  throw new PackfarmError(
    'MANIFEST_INVALID',
    `${where}: cannot tell the manifest type (no mediaType, Content-Type ${headerType ?? 'missing'})`,
  );
}

/**
 * GET a manifest by tag or digest. Keeps the exact bytes; verifies them against the digest when fetched by
 * digest, and against Docker-Content-Digest when the registry sends one.
 */
export async function getManifest(
  client: RegistryClient,
  repository: string,
  target: string,
): Promise<FetchedManifest> {
  const { res, bytes } = await client.requestDocument(
    {
      method: 'GET',
      path: manifestPath(repository, target),
      headers: { accept: ACCEPT },
      scopes: [repositoryScope(repository, ['pull'])],
      what: 'manifest',
      repository,
      accept: [200],
    },
    MAX_MANIFEST_BYTES,
    'manifest',
  );
  const where = `${client.registry}/${repository}@${target}`;
  const byDigest = isDigest(target);
  const digest = digestOfBytes(bytes, byDigest ? digestAlgorithm(target as Digest) : 'sha256');
  if (byDigest && digest !== target) {
    throw new PackfarmError(
      'DIGEST_MISMATCH',
      `${displayUrl(res.url)}: the manifest served hashes to ${digest}, not the requested ${target}`,
      { hint: 'the registry (or something between) altered the content; do not trust this image' },
    );
  }
  const header = headerValue(res.headers['docker-content-digest']);
  if (header && isDigest(header)) {
    const headerDigest = digestOfBytes(bytes, digestAlgorithm(header));
    if (headerDigest !== header) {
      throw new PackfarmError(
        'DIGEST_MISMATCH',
        `${displayUrl(res.url)}: Docker-Content-Digest says ${header} but the bytes hash to ${headerDigest}`,
      );
    }
  }
  return { bytes, digest, mediaType: manifestMediaType(bytes, contentType(res), where) };
}

/**
 * HEAD a manifest: digest, media type and size without the body (registries do not count HEADs against
 * pull rate limits). Falls back to GET when the registry leaves out what we need. undefined when absent.
 */
export async function headManifest(
  client: RegistryClient,
  repository: string,
  target: string,
): Promise<ManifestHead | undefined> {
  const res = await client.request({
    method: 'HEAD',
    path: manifestPath(repository, target),
    headers: { accept: ACCEPT },
    scopes: [repositoryScope(repository, ['pull'])],
    what: 'manifest',
    repository,
    accept: [200, 404],
  });
  await res.body.dump().catch(() => {});
  if (res.status === 404) return undefined;
  const header = headerValue(res.headers['docker-content-digest']);
  const size = Number(headerValue(res.headers['content-length']));
  const type = contentType(res);
  const digest = isDigest(target) ? target : header && isDigest(header) ? header : undefined;
  if (digest && Number.isFinite(size) && size > 0 && type && isManifestMediaType(type)) {
    return { digest, mediaType: type, size };
  }
  const m = await getManifest(client, repository, target);
  return { digest: m.digest, mediaType: m.mediaType, size: m.bytes.length };
}

/**
 * PUT a manifest's exact bytes with Content-Type = its media type, under `tag` (or by digest when no tag).
 * Returns the digest of the bytes, checked against the registry's Docker-Content-Digest.
 */
export async function putManifest(
  client: RegistryClient,
  repository: string,
  input: { bytes: Buffer; mediaType: string; tag?: string },
): Promise<Digest> {
  if (!input.mediaType) throw new Error('putManifest: mediaType is required');
  const digest = sha256Digest(input.bytes);
  const res = await client.request({
    method: 'PUT',
    path: manifestPath(repository, input.tag ?? digest),
    headers: { 'content-type': input.mediaType },
    body: input.bytes,
    scopes: [repositoryScope(repository, ['pull', 'push'])],
    what: 'manifest',
    repository,
    accept: [200, 201, 202, 204],
  });
  await res.body.dump().catch(() => {});
  const header = headerValue(res.headers['docker-content-digest']);
  if (header && digestAlgorithm(header as Digest) === 'sha256' && header !== digest) {
    throw new PackfarmError(
      'DIGEST_MISMATCH',
      `${displayUrl(res.url)}: the registry stored the manifest as ${header}, but its bytes hash to ${digest}`,
      { hint: 'the registry rewrote the manifest; references by digest to it will not resolve' },
    );
  }
  return digest;
}

/** DELETE a manifest by digest (registries refuse deletion by tag). */
export async function deleteManifest(
  client: RegistryClient,
  repository: string,
  digest: Digest,
): Promise<void> {
  const res = await client.request({
    method: 'DELETE',
    path: manifestPath(repository, digest),
    scopes: [repositoryScope(repository, ['delete'])],
    what: 'manifest',
    repository,
    accept: [200, 202, 204],
  });
  await res.body.dump().catch(() => {});
}
