import { createHash } from 'node:crypto';
import { type Readable, Transform } from 'node:stream';
import { type Digest, digestAlgorithm } from '../oci/digest.js';
import { PackfarmError } from '../util/errors.js';
import {
  type RegistryClient,
  type RegistryResponse,
  headerValue,
  isTransientRegistryError,
  transientRetryAfter,
} from './client.js';
import { displayUrl } from './errors.js';
import { retryDelay } from './retry.js';
import { repositoryScope } from './scope.js';

export { getBlob } from './blob-download.js';

export interface BlobUploadInput {
  /** Known digest (and size) let an existing blob be skipped, or mounted, without opening the source. */
  digest?: Digest;
  size?: number;
  /** Opened only when bytes must move; called again when a failed upload is retried. */
  open: () => Readable | Promise<Readable>;
  /** A repository of the same registry that holds this blob: try a cross-repository mount first. */
  mountFrom?: string;
}

export interface BlobUploadResult {
  digest: Digest;
  size: number;
  outcome: 'exists' | 'mounted' | 'uploaded';
}

function blobPath(repository: string, digest: Digest): string {
  return `/v2/${repository}/blobs/${digest}`;
}

/**
 * Pass `source` through, hashing and counting. With `verify`, the stream errors at the end (before the
 * consumer sees 'end') when the bytes do not hash to the digest or the count differs from the size, and
 * as soon as more bytes than `size` arrive. An error of the source itself is turned into `sourceError(err)`,
 * so that, for instance, a file that cannot be read is not reported as a registry failure.
 */
export function measuringStream(
  source: Readable,
  opts: {
    digest?: Digest;
    size?: number;
    verify: boolean;
    where: string;
    sourceError: (err: Error) => Error;
  },
): { stream: Readable; result: () => { digest: Digest; size: number } } {
  const algorithm = opts.digest ? digestAlgorithm(opts.digest) : 'sha256';
  const hash = createHash(algorithm);
  let n = 0;
  let final: Digest | undefined;
  const t = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      n += chunk.length;
      if (opts.verify && opts.size !== undefined && n > opts.size) {
        cb(
          new PackfarmError(
            'SIZE_INVALID',
            `${opts.where}: more than the expected ${opts.size} bytes (the descriptor's size is wrong or the source changed)`,
          ),
        );
        return;
      }
      cb(null, chunk);
    },
    flush(cb) {
      final = `${algorithm}:${hash.digest('hex')}` as Digest;
      if (opts.verify && opts.size !== undefined && n !== opts.size) {
        cb(new PackfarmError('SIZE_INVALID', `${opts.where}: ${n} bytes, expected ${opts.size}`));
        return;
      }
      if (opts.verify && opts.digest && final !== opts.digest) {
        cb(
          new PackfarmError(
            'DIGEST_MISMATCH',
            `${opts.where}: the bytes hash to ${final}, not the expected ${opts.digest}`,
            { hint: 'the content was altered in storage or in transit; do not trust it' },
          ),
        );
        return;
      }
      cb();
    },
  });
  source.on('error', (err) => t.destroy(err instanceof PackfarmError ? err : opts.sourceError(err)));
  // A consumer that stops early releases the source (for a download: the connection).
  t.on('close', () => {
    if (!source.destroyed && !source.readableEnded) source.destroy();
  });
  source.pipe(t);
  return {
    stream: t,
    result: () => {
      if (!final) throw new Error('measuringStream: result() before the stream ended');
      return { digest: final, size: n };
    },
  };
}

/** HEAD a blob: its size when present, undefined when not. */
export async function headBlob(
  client: RegistryClient,
  repository: string,
  digest: Digest,
  scopes: readonly string[] = [repositoryScope(repository, ['pull'])],
): Promise<{ size: number | undefined } | undefined> {
  const res = await client.request({
    method: 'HEAD',
    path: blobPath(repository, digest),
    scopes,
    what: 'blob',
    repository,
    accept: [200, 404],
  });
  await res.body.dump().catch(() => {});
  if (res.status === 404) return undefined;
  const size = Number(headerValue(res.headers['content-length']));
  return { size: Number.isFinite(size) ? size : undefined };
}

function locationOf(res: RegistryResponse, what: string): URL {
  const loc = headerValue(res.headers.location);
  if (!loc) {
    throw new PackfarmError(
      'REGISTRY_ERROR',
      `${displayUrl(res.url)}: the registry answered ${what} with HTTP ${res.status} but no Location header`,
    );
  }
  // Relative, absolute or on another host; its query (upload state) is kept as is.
  return new URL(loc, res.url);
}

function withDigest(url: URL, digest: Digest): URL {
  const u = new URL(url);
  u.searchParams.set('digest', digest);
  return u;
}

function checkStoredDigest(res: RegistryResponse, digest: Digest): void {
  const header = headerValue(res.headers['docker-content-digest']);
  if (header && digestAlgorithm(header as Digest) === digestAlgorithm(digest) && header !== digest) {
    throw new PackfarmError(
      'DIGEST_MISMATCH',
      `${displayUrl(res.url)}: the registry stored the blob as ${header}, expected ${digest}`,
    );
  }
}

/**
 * Make sure a blob is in `repository`:
 *   1. with a known digest, HEAD it and stop if present (the source is never opened);
 *   2. with `mountFrom`, ask for a cross-repository mount (201: done; 202: the registry opened a normal
 *      upload session instead, which is used);
 *   3. upload: one PUT when digest and size are known and the blob is small, else one streaming PATCH
 *      then PUT ?digest=. The bytes are hashed as they go; a digest the source does not match is refused
 *      (ours or the registry's DIGEST_INVALID) and the session is deleted, so nothing is stored.
 * Transient failures (connection resets, 429, 5xx) restart the whole sequence with a re-opened source,
 * within the client's retry budget. Runs under the client's upload concurrency limit.
 */
export function putBlob(
  client: RegistryClient,
  repository: string,
  input: BlobUploadInput,
): Promise<BlobUploadResult> {
  return client.limit(async () => {
    const policy = client.retry;
    for (let attempt = 1; ; attempt++) {
      try {
        return await putBlobOnce(client, repository, input);
      } catch (err) {
        if (!isTransientRegistryError(err) || attempt >= policy.attempts) throw err;
        const delay = retryDelay(attempt, policy, transientRetryAfter(err));
        if (delay === undefined) throw err;
        client.logger.debug(
          `retrying upload of ${input.digest ?? 'a blob'} to ${repository} in ${delay} ms`,
          {
            error: (err as Error).message,
          },
        );
        await client.wait(delay);
      }
    }
  });
}

async function putBlobOnce(
  client: RegistryClient,
  repository: string,
  input: BlobUploadInput,
): Promise<BlobUploadResult> {
  const mountFrom = input.mountFrom && input.mountFrom !== repository ? input.mountFrom : undefined;
  // One scope set for the whole sequence, so one token serves the HEAD, the mount and the upload.
  const scopes = [
    repositoryScope(repository, ['pull', 'push']),
    ...(mountFrom ? [repositoryScope(mountFrom, ['pull'])] : []),
  ];
  const base = { scopes, repository, what: 'upload' as const };

  if (input.digest) {
    const have = await headBlob(client, repository, input.digest, scopes);
    if (have) return { digest: input.digest, size: have.size ?? input.size ?? 0, outcome: 'exists' };
  }

  let session: URL;
  if (input.digest && mountFrom) {
    const baseUrl = await client.baseUrl();
    const url = new URL(`/v2/${repository}/blobs/uploads/`, baseUrl);
    url.searchParams.set('mount', input.digest);
    url.searchParams.set('from', mountFrom);
    const res = await client.request({ ...base, method: 'POST', url, accept: [201, 202] });
    await res.body.dump().catch(() => {});
    if (res.status === 201) {
      checkStoredDigest(res, input.digest);
      const size = input.size ?? (await headBlob(client, repository, input.digest, scopes))?.size ?? 0;
      return { digest: input.digest, size, outcome: 'mounted' };
    }
    session = locationOf(res, 'a mount request');
  } else {
    const res = await client.request({
      ...base,
      method: 'POST',
      path: `/v2/${repository}/blobs/uploads/`,
      accept: [202],
    });
    await res.body.dump().catch(() => {});
    session = locationOf(res, 'an upload request');
  }

  const where = `upload of ${input.digest ?? 'a blob'} to ${client.registry}/${repository}`;
  const sourceError = (err: Error) =>
    new PackfarmError('BLOB_SOURCE_FAILED', `${where}: reading the source failed: ${err.message}`, {
      cause: err,
    });
  let source: Readable | undefined;
  try {
    source = await input.open();
    if (input.digest && input.size !== undefined && input.size <= client.monolithicUploadMaxBytes) {
      // The registry checks the digest; we only make sure the byte count matches Content-Length.
      const measured = measuringStream(source, { size: input.size, verify: true, where, sourceError });
      const res = await client.request({
        ...base,
        method: 'PUT',
        url: withDigest(session, input.digest),
        headers: { 'content-type': 'application/octet-stream', 'content-length': String(input.size) },
        body: measured.stream,
        accept: [201, 204],
      });
      await res.body.dump().catch(() => {});
      checkStoredDigest(res, input.digest);
      return { digest: input.digest, size: input.size, outcome: 'uploaded' };
    }

    const measured = measuringStream(source, {
      ...(input.digest ? { digest: input.digest } : {}),
      ...(input.size !== undefined ? { size: input.size } : {}),
      verify: false,
      where,
      sourceError,
    });
    const patch = await client.request({
      ...base,
      method: 'PATCH',
      url: session,
      headers: {
        'content-type': 'application/octet-stream',
        ...(input.size !== undefined ? { 'content-length': String(input.size) } : {}),
      },
      body: measured.stream,
      // 202 per spec; ECR and others answer 201 or 204.
      accept: [201, 202, 204],
    });
    await patch.body.dump().catch(() => {});
    if (headerValue(patch.headers.location)) session = locationOf(patch, 'the upload');
    const sent = measured.result();
    if (input.digest && sent.digest !== input.digest) {
      throw new PackfarmError(
        'DIGEST_INVALID',
        `${where}: the source's bytes hash to ${sent.digest}, not ${input.digest}; the upload was abandoned`,
        { hint: 'the source changed or the descriptor is wrong; nothing was stored' },
      );
    }
    if (input.size !== undefined && sent.size !== input.size) {
      throw new PackfarmError(
        'SIZE_INVALID',
        `${where}: the source had ${sent.size} bytes, expected ${input.size}; the upload was abandoned`,
      );
    }
    const put = await client.request({
      ...base,
      method: 'PUT',
      url: withDigest(session, sent.digest),
      headers: { 'content-length': '0' },
      accept: [201, 204],
    });
    await put.body.dump().catch(() => {});
    checkStoredDigest(put, sent.digest);
    return { digest: sent.digest, size: sent.size, outcome: 'uploaded' };
  } catch (err) {
    source?.destroy();
    await cancelUpload(client, session, scopes);
    throw err;
  }
}

/** How long deleting an abandoned upload session may take: it runs even after the client was aborted. */
const CANCEL_UPLOAD_MS = 10_000;

/** DELETE an upload session; failures are ignored (the session may already be gone). */
async function cancelUpload(client: RegistryClient, session: URL, scopes: readonly string[]): Promise<void> {
  try {
    const res = await client.request({
      method: 'DELETE',
      url: session,
      scopes,
      what: 'upload',
      accept: [200, 202, 204, 404],
      signal: AbortSignal.timeout(CANCEL_UPLOAD_MS),
    });
    await res.body.dump().catch(() => {});
  } catch {
    // best effort
  }
}

/** DELETE a blob (registries may refuse: deletion is often disabled). */
export async function deleteBlob(client: RegistryClient, repository: string, digest: Digest): Promise<void> {
  const res = await client.request({
    method: 'DELETE',
    path: blobPath(repository, digest),
    scopes: [repositoryScope(repository, ['delete'])],
    what: 'blob',
    repository,
    accept: [200, 202, 204],
  });
  await res.body.dump().catch(() => {});
}
