import { PackfarmError } from '../util/errors.js';
import type { ErrorCode } from '../util/error-codes.js';

/** One entry of a registry's `{"errors":[…]}` body. */
export interface RegistryErrorEntry {
  code: string;
  message?: string;
  detail?: unknown;
}

/** What a failed request was about, for messages and codes. */
export interface RequestContext {
  method: string;
  url: URL;
  /** The registry name as the user wrote it (host[:port]). */
  registry: string;
  /** What the request touched, to phrase the message and pick the 404 code. */
  what: 'ping' | 'manifest' | 'blob' | 'upload' | 'tags' | 'token' | 'other';
  /** The repository, when the request was about one. */
  repository?: string;
  /** The registry is reached over plain HTTP / unverified TLS. */
  insecure?: boolean;
}

// Registry error codes (distribution-spec plus Docker's legacy ones) → our stable codes.
const CODE_MAP: Record<string, ErrorCode> = {
  UNAUTHORIZED: 'REGISTRY_UNAUTHORIZED',
  DENIED: 'REGISTRY_DENIED',
  TOOMANYREQUESTS: 'REGISTRY_TOO_MANY_REQUESTS',
  UNSUPPORTED: 'REGISTRY_UNSUPPORTED',
  MANIFEST_UNKNOWN: 'MANIFEST_UNKNOWN',
  MANIFEST_INVALID: 'MANIFEST_INVALID',
  MANIFEST_BLOB_UNKNOWN: 'MANIFEST_BLOB_UNKNOWN',
  MANIFEST_UNVERIFIED: 'MANIFEST_INVALID',
  BLOB_UNKNOWN: 'BLOB_UNKNOWN',
  BLOB_UPLOAD_INVALID: 'BLOB_UPLOAD_INVALID',
  BLOB_UPLOAD_UNKNOWN: 'BLOB_UPLOAD_UNKNOWN',
  DIGEST_INVALID: 'DIGEST_INVALID',
  SIZE_INVALID: 'SIZE_INVALID',
  NAME_INVALID: 'NAME_INVALID',
  NAME_UNKNOWN: 'NAME_UNKNOWN',
  TAG_INVALID: 'TAG_INVALID',
  PAGINATION_NUMBER_INVALID: 'REGISTRY_ERROR',
  RANGE_INVALID: 'REGISTRY_ERROR',
};

/** A URL for messages: no user info, no query (upload and storage URLs carry state and signatures there). */
export function displayUrl(url: URL): string {
  return `${url.protocol}//${url.host}${url.pathname}`;
}

/** Parse a registry error body; undefined when it is not one. */
export function parseErrorBody(text: string): RegistryErrorEntry[] | undefined {
  if (!text.trim().startsWith('{')) return undefined;
  try {
    const doc = JSON.parse(text) as { errors?: unknown; details?: unknown };
    if (!Array.isArray(doc.errors)) return undefined;
    const out: RegistryErrorEntry[] = [];
    for (const e of doc.errors) {
      if (e && typeof e === 'object' && typeof (e as { code?: unknown }).code === 'string') {
        const entry = e as { code: string; message?: unknown; detail?: unknown };
        out.push({
          code: entry.code,
          ...(typeof entry.message === 'string' ? { message: entry.message } : {}),
          ...(entry.detail !== undefined ? { detail: entry.detail } : {}),
        });
      }
    }
    return out.length > 0 ? out : undefined;
  } catch {
    return undefined;
  }
}

function statusCode(status: number, what: RequestContext['what']): ErrorCode {
  if (status === 401) return 'REGISTRY_UNAUTHORIZED';
  if (status === 403) return 'REGISTRY_DENIED';
  if (status === 429) return 'REGISTRY_TOO_MANY_REQUESTS';
  if (status === 404) {
    if (what === 'manifest') return 'MANIFEST_UNKNOWN';
    if (what === 'blob') return 'BLOB_UNKNOWN';
    if (what === 'upload') return 'BLOB_UPLOAD_UNKNOWN';
    if (what === 'tags') return 'NAME_UNKNOWN';
  }
  if (status === 413) return 'TOO_LARGE';
  return 'REGISTRY_ERROR';
}

export function loginHint(registry: string): string {
  return (
    `log in: \`packfarm login ${registry}\` (or \`podman login\`, \`docker login\`), or set ` +
    `CNB_REGISTRY_AUTH='{"${registry}":"Basic <base64 user:pass>"}'`
  );
}

/**
 * Credentials were sent and the registry (or its token service) refused them: say so, name where they came
 * from, and do not suggest logging in "for the first time".
 */
export function refusedCredentialsError(
  registry: string,
  source: string | undefined,
  cause: PackfarmError,
): PackfarmError {
  const from = source ? `the credentials from ${source}` : 'the credentials given';
  return new PackfarmError('REGISTRY_UNAUTHORIZED', `${registry} refused ${from}: ${cause.message}`, {
    hint: `the username or password (or token) is wrong or expired: log in again with \`packfarm login ${registry}\`${source ? `, or fix ${source}` : ''}`,
    cause,
  });
}

function hintFor(code: ErrorCode, ctx: RequestContext, retryAfter?: string): string | undefined {
  switch (code) {
    case 'REGISTRY_UNAUTHORIZED':
      return loginHint(ctx.registry);
    case 'REGISTRY_DENIED':
      return `the credentials used for ${ctx.registry} are not allowed this on ${ctx.repository ?? 'the registry'}: check the account's permissions (push needs write access)`;
    case 'REGISTRY_TOO_MANY_REQUESTS':
      return `the registry is rate limiting${retryAfter ? ` (Retry-After: ${retryAfter})` : ''}: wait and try again, or log in for a higher limit`;
    case 'MANIFEST_UNKNOWN':
      return 'check the repository name and the tag or digest';
    case 'NAME_UNKNOWN':
      return 'check the repository name';
    case 'MANIFEST_BLOB_UNKNOWN':
      return 'push every blob and child manifest before the manifest that references them';
    case 'DIGEST_INVALID':
      return 'the bytes sent do not hash to the digest given; the source changed or the descriptor is wrong';
    case 'TOO_LARGE':
      return 'registries accept manifests up to about 4 MiB';
    default:
      return undefined;
  }
}

/** The PackfarmError for a response that was not what the protocol expects. */
export function errorFromResponse(
  ctx: RequestContext,
  status: number,
  bodyText: string,
  headers: { retryAfter?: string; retryAfterTooLong?: { askedMs: number; maxMs: number } } = {},
): PackfarmError {
  const entries = parseErrorBody(bodyText);
  const first = entries?.[0];
  const code = (first && CODE_MAP[first.code]) ?? statusCode(status, ctx.what);
  let detail = '';
  if (entries) {
    detail = entries
      .map((e) => {
        const d = e.detail === undefined ? '' : ` (${compact(e.detail)})`;
        return `${e.code}: ${e.message ?? ''}${d}`;
      })
      .join('; ');
  } else if (bodyText.trim() !== '') {
    detail = compact(bodyText.trim());
  }
  const tooLong = headers.retryAfterTooLong;
  // spec/registry.md: a Retry-After longer than we wait fails at once, and the message says so.
  const waited = tooLong
    ? `; the registry asked to retry after ${Math.round(tooLong.askedMs / 1000)} s (Retry-After: ${headers.retryAfter}), longer than packfarm waits (${Math.round(tooLong.maxMs / 1000)} s)`
    : '';
  const message = `${ctx.method} ${displayUrl(ctx.url)} failed: HTTP ${status}${detail ? ` — ${detail}` : ''}${waited}`;
  return new PackfarmError(code, message, {
    hint:
      hintFor(code, ctx, headers.retryAfter) ??
      (tooLong ? 'the registry is unavailable for now: try again later' : undefined),
  });
}

const TLS_CODES = new Set([
  'EPROTO',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'ERR_SSL_PACKET_LENGTH_TOO_LONG',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function errorCodeOf(err: unknown): string | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && code !== 'UND_ERR_SOCKET') return code;
    e = (e as { cause?: unknown }).cause;
  }
  return (err as { code?: unknown } | undefined)?.code as string | undefined;
}

function looksLikeTls(err: unknown, code: string | undefined): boolean {
  if (code && (TLS_CODES.has(code) || code.startsWith('ERR_SSL_') || code.startsWith('ERR_TLS_')))
    return true;
  const msg = String((err as Error | undefined)?.message ?? '');
  return /wrong version number|ssl|tls|certificate/i.test(msg);
}

/** The PackfarmError for a request that got no HTTP answer at all (refused, reset, TLS failure, DNS …). */
export function errorFromNetwork(ctx: RequestContext, err: unknown): PackfarmError {
  if (err instanceof PackfarmError) return err;
  const code = errorCodeOf(err);
  const why = `${code ? `${code}: ` : ''}${(err as Error | undefined)?.message ?? String(err)}`;
  const message = `${ctx.method} ${displayUrl(ctx.url)} failed: ${why}`;
  const insecureHint =
    `if ${ctx.registry} serves plain HTTP or a self-signed certificate, pass --insecure-registry ${ctx.registry} ` +
    `(or set CNB_INSECURE_REGISTRIES=${ctx.registry})`;
  let hint: string | undefined;
  if (ctx.url.protocol === 'https:' && looksLikeTls(err, code)) {
    hint = ctx.insecure
      ? 'the registry answered neither HTTPS nor plain HTTP; check the host and port'
      : insecureHint;
    return new PackfarmError('REGISTRY_TLS', message, { hint, cause: err });
  }
  if (code === 'ECONNREFUSED') {
    hint = `nothing is listening at ${ctx.url.host}: check the registry address and that it is running${ctx.insecure ? '' : `; ${insecureHint}`}`;
  } else if (code === 'ENOTFOUND' || code === 'EAI_AGAIN') {
    hint = `the host name ${ctx.url.hostname} does not resolve: check the registry address`;
  }
  return new PackfarmError('REGISTRY_UNREACHABLE', message, { hint, cause: err });
}

function compact(v: unknown): string {
  const s = typeof v === 'string' ? v : JSON.stringify(v);
  const one = s.replace(/\s+/g, ' ');
  return one.length > 300 ? `${one.slice(0, 300)}…` : one;
}
