import { type Hash, createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { type Digest, digestAlgorithm } from '../oci/digest.js';
import { PackfarmError } from '../util/errors.js';
import { type RegistryClient, type RegistryResponse, headerValue } from './client.js';
import { isRetryableNetworkError, retryDelay } from './retry.js';
import { repositoryScope } from './scope.js';
import { firedTimeout } from './timeouts.js';

/**
 * A blob download that survives a stalled or broken body. The consumer gets one stream; behind it, a body
 * that stops (body idle timeout) or breaks off (reset, closed mid-body) is fetched again from where it
 * stopped, within the client's retry budget:
 * - by `Range: bytes=N-` when the registry (or its storage) answers 206 with a Content-Range starting at N;
 * - otherwise the re-sent body's first N bytes are hashed and compared with the N bytes already delivered,
 *   then dropped, so the consumer sees one attempt's bytes only (a registry that sends different bytes is a
 *   DIGEST_MISMATCH, never a splice).
 * What is finally delivered is verified against the digest (and `size` when given) before the stream ends.
 *
 * Blob bodies are not under the overall deadline as a whole (a large layer may rightly take long); the
 * deadline bounds how long a download may go without delivering a byte, waits and re-requests included:
 * no retry starts that would pass it.
 */
export async function getBlob(
  client: RegistryClient,
  repository: string,
  digest: Digest,
  opts: { size?: number } = {},
): Promise<Readable> {
  const started = Date.now();
  // The first request is awaited here so that a missing blob or a refusal rejects this promise, as callers
  // expect, instead of erroring the stream later.
  const first = await requestBlob(client, repository, digest, 0);
  return Readable.from(deliver(client, repository, digest, opts.size, first, started), {
    objectMode: false,
  });
}

function requestBlob(
  client: RegistryClient,
  repository: string,
  digest: Digest,
  from: number,
): Promise<RegistryResponse> {
  return client.request({
    method: 'GET',
    path: `/v2/${repository}/blobs/${digest}`,
    scopes: [repositoryScope(repository, ['pull'])],
    what: 'blob',
    repository,
    ...(from > 0 ? { headers: { range: `bytes=${from}-` } } : {}),
    accept: from > 0 ? [200, 206] : [200],
  });
}

/** A close-delimited body that ended before its declared length: as transient as a reset. */
class ShortBodyError extends Error {
  override readonly name = 'ShortBodyError';
}

async function* deliver(
  client: RegistryClient,
  repository: string,
  digest: Digest,
  size: number | undefined,
  first: RegistryResponse,
  started: number,
): AsyncGenerator<Buffer> {
  const where = `${client.registry}/${repository}@${digest}`;
  const algorithm = digestAlgorithm(digest);
  const delivered = createHash(algorithm);
  const declared = Number(headerValue(first.headers['content-length']));
  const total = size ?? (Number.isFinite(declared) ? declared : undefined);
  let offset = 0;
  let lastProgress = started;
  let res = first;
  // Bytes of a re-sent body (200 to a Range request) to compare with what was delivered, then drop.
  let skip: { left: number; hash: Hash; expected: string } | undefined;
  for (let attempt = 1; ; ) {
    try {
      for await (const raw of res.body) {
        let chunk = raw as Buffer;
        if (skip) {
          const part = chunk.subarray(0, skip.left);
          skip.hash.update(part);
          skip.left -= part.length;
          chunk = chunk.subarray(part.length);
          if (skip.left > 0) continue;
          if (skip.hash.digest('hex') !== skip.expected) {
            throw new PackfarmError(
              'DIGEST_MISMATCH',
              `${where}: the registry sent different bytes on a retry than before the interruption; the download cannot continue`,
              { hint: 'the content was altered in storage or in transit; do not trust it' },
            );
          }
          skip = undefined;
        }
        if (chunk.length === 0) continue;
        if (size !== undefined && offset + chunk.length > size) {
          throw new PackfarmError(
            'SIZE_INVALID',
            `${where}: more than the expected ${size} bytes (the descriptor's size is wrong or the source changed)`,
          );
        }
        delivered.update(chunk);
        offset += chunk.length;
        lastProgress = Date.now();
        yield chunk;
      }
      if (skip || (total !== undefined && offset < total)) {
        throw new ShortBodyError(`the body ended after ${offset} of ${total ?? '?'} bytes`);
      }
      break;
    } catch (err) {
      res.body.destroy();
      if (client.signal?.aborted) throw client.signal.reason;
      if (err instanceof PackfarmError) throw err;
      const transient = err instanceof ShortBodyError || isRetryableNetworkError(err);
      const delay = retryDelay(attempt, client.retry)!;
      const withinDeadline = Date.now() - lastProgress + delay < client.timeouts.deadlineMs;
      if (!transient || attempt >= client.retry.attempts || !withinDeadline) {
        const detail = `${offset} of ${total ?? '?'} bytes received`;
        if (attempt > 1 || firedTimeout(err))
          throw res.bodyError(err, { attempts: attempt, started, detail });
        throw new PackfarmError(
          'REGISTRY_UNREACHABLE',
          `${where}: the download was interrupted (${detail}): ${(err as Error).message}`,
          { cause: err },
        );
      }
      client.logger.debug(`resuming ${where} at byte ${offset} in ${delay} ms`, {
        error: String((err as Error).message),
      });
      await client.wait(delay);
      attempt++;
      res = await requestBlob(client, repository, digest, offset);
      if (res.status === 206) {
        checkContentRange(res, offset, where);
      } else if (offset > 0) {
        skip = { left: offset, hash: createHash(algorithm), expected: delivered.copy().digest('hex') };
      }
    }
  }
  const final = `${algorithm}:${delivered.digest('hex')}`;
  if (size !== undefined && offset !== size) {
    throw new PackfarmError('SIZE_INVALID', `${where}: ${offset} bytes, expected ${size}`);
  }
  if (final !== digest) {
    throw new PackfarmError(
      'DIGEST_MISMATCH',
      `${where}: the bytes hash to ${final}, not the expected ${digest}`,
      { hint: 'the content was altered in storage or in transit; do not trust it' },
    );
  }
}

/** A 206 must continue exactly where the delivered bytes stop. */
function checkContentRange(res: RegistryResponse, offset: number, where: string): void {
  const range = headerValue(res.headers['content-range']);
  const m = range ? /^bytes (\d+)-\d+\/(?:\d+|\*)$/.exec(range.trim()) : null;
  if (!m || Number(m[1]) !== offset) {
    res.body.destroy();
    throw new PackfarmError(
      'REGISTRY_ERROR',
      `${where}: asked to resume at byte ${offset}, the registry answered 206 with Content-Range ${range ?? '(none)'}`,
    );
  }
}
