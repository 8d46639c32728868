import type { LookupFunction } from 'node:net';
import { Readable } from 'node:stream';
import pLimit, { type LimitFunction } from 'p-limit';
import { Agent, type Dispatcher } from 'undici';
import { registryApiHost } from '../oci/reference.js';
import { PackfarmError } from '../util/errors.js';
import { type Logger, silentLogger } from '../util/log.js';
import { type AuthScheme, Authenticator, schemeFromChallenges } from './auth.js';
import { parseWwwAuthenticate } from './challenge.js';
import { type Credential, type CredentialResolver, createKeychain } from './credentials.js';
import {
  type RequestContext,
  displayUrl,
  errorFromNetwork,
  errorFromResponse,
  refusedCredentialsError,
} from './errors.js';
import { isInsecureRegistry } from './insecure.js';
import {
  type ResolvedRetry,
  type RetryOptions,
  isRetryableNetworkError,
  isRetryableStatus,
  parseRetryAfter,
  resolveRetry,
  retryDelay,
} from './retry.js';
import {
  DeadlineError,
  type RegistryTimeouts,
  describeTimeout,
  firedTimeout,
  resolveRegistryTimeouts,
} from './timeouts.js';

export type HttpMethod = 'GET' | 'HEAD' | 'PUT' | 'POST' | 'PATCH' | 'DELETE';

export interface RegistryClientOptions {
  /** The registry as written in image references: host[:port]; docker.io means Docker Hub. */
  registry: string;
  /** Registries reachable over plain HTTP or unverified TLS (see insecure.ts for the matching rules). */
  insecureRegistries?: readonly string[];
  /** Static credentials, or a resolver; default: CNB_REGISTRY_AUTH, then docker config.json (of `env`). */
  credentials?: Credential | CredentialResolver;
  /** Environment for the default credential lookup (default process.env). */
  env?: NodeJS.ProcessEnv;
  /** Blob uploads running at once through this client (default 6). */
  concurrency?: number;
  userAgent?: string;
  retry?: RetryOptions;
  /** Redirects followed per GET/HEAD (default 5). */
  maxRedirects?: number;
  /** Blobs of known digest and size up to this many bytes go in one PUT; larger ones stream in one PATCH. */
  monolithicUploadMaxBytes?: number;
  /** Bound on establishing a connection (default 15 s); same as `timeouts.connectMs`. */
  connectTimeoutMs?: number;
  /** Timeouts (timeouts.ts); unset ones come from PACKFARM_REGISTRY_*_TIMEOUT in `env`, then defaults. */
  timeouts?: Partial<RegistryTimeouts>;
  /** Host name resolution for connections (default the system's; tests map a non-loopback name to 127.0.0.1). */
  lookup?: LookupFunction;
  logger?: Logger;
  /**
   * Stops every request of this client, its retry waits and the bodies it streams, with the signal's reason
   * (the CLI's: an ABORTED PackfarmError on SIGINT/SIGTERM). A request may replace it (`RegistryRequest.signal`).
   */
  signal?: AbortSignal;
  /** Clock for token expiry (tests). */
  now?: () => number;
}

export interface PingResult {
  /** The base URL requests go to, e.g. https://registry.example or http://127.0.0.1:5000. */
  origin: string;
  auth: AuthScheme['kind'];
  realm?: string;
  service?: string;
  /** `Docker-Distribution-API-Version`, when sent. */
  apiVersion?: string;
}

export interface RegistryRequest {
  method: HttpMethod;
  /** A path on the registry (`/v2/…`, with query) … */
  path?: string;
  /** … or an absolute URL (upload session Locations). */
  url?: URL;
  headers?: Record<string, string>;
  /** A Buffer can be sent again (retries, re-authentication); a stream is sent once. */
  body?: Buffer | Readable;
  /** Token scopes this request needs. */
  scopes: readonly string[];
  what: RequestContext['what'];
  repository?: string;
  /** Statuses handed back to the caller; any other becomes a PackfarmError. */
  accept: readonly number[];
  /** Follow redirects (default: for GET and HEAD only; never forwarding Authorization to another origin). */
  followRedirects?: boolean;
  /** Replaces the client's abort signal: clean-up after an abort (deleting an upload session) must still run. */
  signal?: AbortSignal;
}

export interface RegistryResponse {
  status: number;
  headers: Dispatcher.ResponseData['headers'];
  body: Dispatcher.ResponseData['body'];
  /** The URL that answered (after redirects). */
  url: URL;
  /**
   * The PackfarmError for a failure while reading `body` (a timeout, a reset), naming the URL; `tries`
   * replaces this response's own attempt count when the body was fetched several times (a resumed blob).
   */
  bodyError(err: unknown, tries?: { attempts: number; started: number; detail?: string }): PackfarmError;
}

const REDIRECT_STATUS = new Set([301, 302, 303, 307, 308]);

// Errors worth a new attempt one level up (an upload restarted from a re-opened source), with the delay
// the registry asked for when it did.
const transientErrors = new WeakMap<Error, { retryAfterMs?: number }>();

export function isTransientRegistryError(err: unknown): err is Error {
  return err instanceof Error && transientErrors.has(err);
}

export function transientRetryAfter(err: unknown): number | undefined {
  return err instanceof Error ? transientErrors.get(err)?.retryAfterMs : undefined;
}

function headerValue(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v[0] : v;
}

/**
 * A client for one registry (host[:port]): scheme detection, authentication with a token cache, bounded
 * retries and manual redirects, over one undici Agent (a keep-alive pool per origin). The repository-level
 * operations are functions over a client: manifests.ts, blobs.ts, tags.ts.
 */
export class RegistryClient {
  readonly registry: string;
  /** Listed in insecureRegistries, or a loopback registry: plain HTTP and unverified TLS are allowed. */
  readonly insecure: boolean;
  /** Bounds concurrent blob uploads through this client. */
  readonly limit: LimitFunction;
  readonly retry: ResolvedRetry;
  readonly logger: Logger;
  readonly monolithicUploadMaxBytes: number;
  readonly auth: Authenticator;
  readonly timeouts: RegistryTimeouts;
  readonly signal: AbortSignal | undefined;

  private readonly apiHost: string;
  private readonly insecureList: readonly string[];
  private readonly agent: Agent;
  private readonly unverifiedAgent: Agent | undefined;
  private readonly userAgent: string;
  private readonly maxRedirects: number;
  private readonly resolveCred: () => Promise<Credential | undefined>;
  private origin: URL | undefined;
  private pinging: Promise<PingResult> | undefined;
  private readonly warned = new Set<string>();

  constructor(opts: RegistryClientOptions) {
    this.registry = opts.registry;
    this.apiHost = registryApiHost(opts.registry);
    this.insecureList = opts.insecureRegistries ?? [];
    this.insecure =
      isInsecureRegistry(opts.registry, this.insecureList) ||
      isInsecureRegistry(this.apiHost, this.insecureList);
    this.limit = pLimit(Math.max(1, opts.concurrency ?? 6));
    this.retry = resolveRetry(opts.retry);
    this.logger = opts.logger ?? silentLogger;
    this.signal = opts.signal;
    this.monolithicUploadMaxBytes = opts.monolithicUploadMaxBytes ?? 32 * 1024 * 1024;
    this.userAgent = opts.userAgent ?? `packfarm (node ${process.version})`;
    this.maxRedirects = opts.maxRedirects ?? 5;
    this.timeouts = resolveRegistryTimeouts(opts.env ?? process.env, {
      ...(opts.connectTimeoutMs !== undefined ? { connectMs: opts.connectTimeoutMs } : {}),
      ...opts.timeouts,
    });
    const connect = {
      timeout: this.timeouts.connectMs,
      ...(opts.lookup ? { lookup: opts.lookup } : {}),
    };
    const agentOptions = {
      keepAliveTimeout: 10_000,
      headersTimeout: this.timeouts.headersMs,
      bodyTimeout: this.timeouts.bodyIdleMs,
    };
    this.agent = new Agent({ connect, ...agentOptions });
    this.unverifiedAgent = this.insecure
      ? new Agent({ connect: { ...connect, rejectUnauthorized: false }, ...agentOptions })
      : undefined;

    const creds = opts.credentials;
    const resolver: CredentialResolver =
      typeof creds === 'function'
        ? creds
        : creds !== undefined
          ? async () => creds
          : createKeychain({ ...(opts.env ? { env: opts.env } : {}) });
    let cred: Promise<Credential | undefined> | undefined;
    this.resolveCred = () => {
      if (!cred) {
        cred = resolver(this.registry);
        cred.catch(() => {
          cred = undefined;
        });
      }
      return cred;
    };
    this.auth = new Authenticator({
      registry: this.registry,
      credential: this.resolveCred,
      ...(opts.now ? { now: opts.now } : {}),
      transport: {
        send: async ({ method, url, headers, body }) => {
          const res = await this.send({
            method,
            url,
            headers,
            ...(body ? { body } : {}),
            ctx: { method, url, registry: this.registry, what: 'token', insecure: this.insecure },
            authorize: false,
            accept: 'any',
          });
          const text = await readText(res.body, 1024 * 1024).catch((err: unknown) => {
            throw res.bodyError(err);
          });
          const retryAfter = headerValue(res.headers['retry-after']);
          return { status: res.status, text, url: res.url, ...(retryAfter ? { retryAfter } : {}) };
        },
      },
    });
  }

  /**
   * `GET /v2/`: decides the scheme (HTTPS; for an insecure registry HTTPS without verification, falling back
   * to plain HTTP) and learns the auth challenge. Done once per client; a failure is not cached.
   */
  ping(): Promise<PingResult> {
    if (!this.pinging) {
      this.pinging = this.doPing();
      this.pinging.catch(() => {
        this.pinging = undefined;
      });
    }
    return this.pinging;
  }

  private async doPing(): Promise<PingResult> {
    const candidates = this.insecure ? ['https:', 'http:'] : ['https:'];
    let lastErr: unknown;
    for (const scheme of candidates) {
      const url = new URL(`${scheme}//${this.apiHost}/v2/`);
      const ctx: RequestContext = {
        method: 'GET',
        url,
        registry: this.registry,
        what: 'ping',
        insecure: this.insecure,
      };
      let res: RegistryResponse;
      try {
        res = await this.send({ method: 'GET', url, ctx, authorize: false, accept: 'any' });
      } catch (err) {
        lastErr = err;
        continue;
      }
      const text = await readText(res.body, 64 * 1024).catch((err: unknown) => {
        throw res.bodyError(err);
      });
      const apiVersion = headerValue(res.headers['docker-distribution-api-version']);
      const base = { origin: url.origin, ...(apiVersion ? { apiVersion } : {}) };
      if (res.status === 200) {
        this.origin = new URL(url.origin);
        this.auth.setScheme({ kind: 'none' });
        return { ...base, auth: 'none' };
      }
      if (res.status === 401) {
        const scheme = schemeFromChallenges(parseWwwAuthenticate(res.headers['www-authenticate']));
        if (!scheme) {
          throw new PackfarmError(
            'REGISTRY_UNAUTHORIZED',
            `GET ${displayUrl(url)} answered 401 without a Basic or Bearer challenge: cannot authenticate`,
          );
        }
        this.origin = new URL(url.origin);
        this.auth.setScheme(scheme);
        return {
          ...base,
          auth: scheme.kind,
          ...(scheme.kind === 'bearer'
            ? { realm: scheme.realm, ...(scheme.service !== undefined ? { service: scheme.service } : {}) }
            : {}),
        };
      }
      const err = errorFromResponse(ctx, res.status, text);
      if (res.status === 404) {
        throw new PackfarmError(
          'REGISTRY_ERROR',
          `${displayUrl(url)} is not an OCI registry: GET /v2/ answered 404`,
          { hint: 'check the registry host and port', cause: err },
        );
      }
      throw err;
    }
    throw lastErr instanceof PackfarmError
      ? lastErr
      : errorFromNetwork(
          {
            method: 'GET',
            url: new URL(`https://${this.apiHost}/v2/`),
            registry: this.registry,
            what: 'ping',
            insecure: this.insecure,
          },
          lastErr,
        );
  }

  /** The registry's base URL (after the ping). */
  async baseUrl(): Promise<URL> {
    await this.ping();
    return this.origin!;
  }

  /** A request to the registry: authenticated, retried when safe, redirects followed per the rules. */
  async request(req: RegistryRequest): Promise<RegistryResponse> {
    const base = await this.baseUrl();
    const url = req.url ?? new URL(req.path ?? '/v2/', base);
    const ctx: RequestContext = {
      method: req.method,
      url,
      registry: this.registry,
      what: req.what,
      insecure: this.insecure,
      ...(req.repository !== undefined ? { repository: req.repository } : {}),
    };
    const res = await this.send({
      method: req.method,
      url,
      ...(req.headers ? { headers: req.headers } : {}),
      ...(req.body !== undefined ? { body: req.body } : {}),
      ...(req.signal ? { signal: req.signal } : {}),
      ctx,
      authorize: true,
      scopes: req.scopes,
      accept: req.accept,
      followRedirects: req.followRedirects ?? (req.method === 'GET' || req.method === 'HEAD'),
    });
    return res;
  }

  /**
   * A request whose body is a document read whole (manifest, tag list): a body that stalls or breaks off
   * (idle timeout, reset) is fetched again, within the same retry budget and overall deadline as a request.
   */
  async requestDocument(
    req: RegistryRequest,
    maxBytes: number,
    what: string,
  ): Promise<{ res: RegistryResponse; bytes: Buffer }> {
    const started = Date.now();
    for (let attempt = 1; ; attempt++) {
      const res = await this.request(req);
      if (!req.accept.includes(res.status) || res.status === 404) return { res, bytes: Buffer.alloc(0) };
      try {
        return { res, bytes: await readCapped(res, maxBytes, what) };
      } catch (err) {
        const cause = (err as { cause?: unknown }).cause;
        const transient =
          isRetryableNetworkError(cause) &&
          firedTimeout(cause) !== 'deadlineMs' &&
          attempt < this.retry.attempts;
        const delay = retryDelay(attempt, this.retry)!;
        if (!transient || Date.now() - started + delay >= this.timeouts.deadlineMs) {
          if (!firedTimeout(cause)) throw err;
          // Say how many fetches of the document the timeout ended, not just the last one.
          const ctx: RequestContext = {
            method: req.method,
            url: res.url,
            registry: this.registry,
            what: req.what,
            insecure: this.insecure,
            ...(req.repository !== undefined ? { repository: req.repository } : {}),
          };
          throw this.networkError(ctx, cause, { attempts: attempt, started });
        }
        this.logger.debug(`retrying ${req.method} ${displayUrl(res.url)} in ${delay} ms`, {
          error: String((err as Error).message),
        });
        await this.wait(delay, req.signal ?? this.signal);
      }
    }
  }

  /**
   * Send with retries. `accept: 'any'` hands every HTTP answer back (ping, token); otherwise statuses outside
   * the list become errors after the retryable ones have been retried.
   */
  private async send(opts: {
    method: string;
    url: URL;
    headers?: Record<string, string>;
    body?: Buffer | Readable;
    signal?: AbortSignal;
    ctx: RequestContext;
    authorize: boolean;
    scopes?: readonly string[];
    accept: readonly number[] | 'any';
    followRedirects?: boolean;
  }): Promise<RegistryResponse> {
    const abort = opts.signal ?? this.signal;
    abort?.throwIfAborted();
    const resendable = !(opts.body instanceof Readable);
    const policy = this.retry;
    const started = Date.now();
    // The overall deadline covers every attempt and wait of a request that can be sent again (a streamed
    // upload may rightly take long: it is bounded by the headers timeout once sent). It stays armed over the
    // body of a document read whole; a blob body is bounded by the idle timeout only.
    const deadline = resendable ? new AbortController() : undefined;
    const timer = deadline
      ? setTimeout(() => deadline.abort(new DeadlineError('deadline')), this.timeouts.deadlineMs)
      : undefined;
    timer?.unref();
    const signals = [deadline?.signal, abort].filter((x): x is AbortSignal => x !== undefined);
    const signal = signals.length > 1 ? AbortSignal.any(signals) : signals[0];
    const disarm = () => clearTimeout(timer);
    const withinDeadline = (delay: number) =>
      Date.now() - started + delay < this.timeouts.deadlineMs && !deadline?.signal.aborted;
    const fail = (err: unknown, url: URL, attempts: number) =>
      this.networkError({ ...opts.ctx, url }, err, { attempts, started });
    const handBack = (res: Omit<RegistryResponse, 'bodyError'>, attempts: number): RegistryResponse => {
      if (opts.ctx.what === 'blob' && opts.method === 'GET') disarm();
      else res.body.once('close', disarm);
      return {
        ...res,
        bodyError: (err, tries) =>
          tries ? this.networkError({ ...opts.ctx, url: res.url }, err, tries) : fail(err, res.url, attempts),
      };
    };
    for (let attempt = 1; ; attempt++) {
      let res: Omit<RegistryResponse, 'bodyError'>;
      try {
        res = await this.sendOnce(opts, resendable, signal);
      } catch (err) {
        if (abort?.aborted) {
          disarm();
          throw abort.reason;
        }
        if (err instanceof PackfarmError) {
          disarm();
          throw err;
        }
        const transient = isRetryableNetworkError(err);
        const delay = retryDelay(attempt, policy)!;
        if (transient && resendable && attempt < policy.attempts && withinDeadline(delay)) {
          this.logger.debug(`retrying ${opts.method} ${displayUrl(opts.url)} in ${delay} ms`, {
            error: String((err as Error).message),
          });
          await this.wait(delay, abort);
          continue;
        }
        disarm();
        const e = fail(err, opts.url, attempt);
        if (transient) transientErrors.set(e, {});
        throw e;
      }
      if (opts.accept === 'any' || opts.accept.includes(res.status)) {
        if (
          opts.accept === 'any' &&
          isRetryableStatus(res.status) &&
          resendable &&
          attempt < policy.attempts
        ) {
          const delay = retryDelay(attempt, policy, parseRetryAfter(headerValue(res.headers['retry-after'])));
          if (delay !== undefined && withinDeadline(delay)) {
            await res.body.dump().catch(() => {});
            await this.wait(delay, abort);
            continue;
          }
        }
        return handBack(res, attempt);
      }
      const retryAfterText = headerValue(res.headers['retry-after']);
      const retryAfterMs = parseRetryAfter(retryAfterText);
      if (isRetryableStatus(res.status) && resendable && attempt < policy.attempts) {
        const delay = retryDelay(attempt, policy, retryAfterMs);
        if (delay !== undefined && withinDeadline(delay)) {
          this.logger.debug(
            `retrying ${opts.method} ${displayUrl(res.url)} after HTTP ${res.status} in ${delay} ms`,
          );
          await res.body.dump().catch(() => {});
          await this.wait(delay, abort);
          continue;
        }
      }
      const text = await readText(res.body, 64 * 1024).catch(() => '');
      disarm();
      let err = errorFromResponse({ ...opts.ctx, url: res.url }, res.status, text, {
        ...(retryAfterText !== undefined ? { retryAfter: retryAfterText } : {}),
        ...(retryAfterMs !== undefined && retryAfterMs > policy.maxRetryAfterMs
          ? { retryAfterTooLong: { askedMs: retryAfterMs, maxMs: policy.maxRetryAfterMs } }
          : {}),
      });
      const sentCredential =
        res.status === 401 && opts.authorize ? await this.resolveCred().catch(() => undefined) : undefined;
      if (sentCredential && !(await this.insufficientScope(res))) {
        err = refusedCredentialsError(this.registry, sentCredential.source, err);
      } else if (res.status === 401 && opts.authorize && (await this.insufficientScope(res))) {
        // Authenticated, but the token service granted less than asked (a partial grant): logging in again
        // will not help, permissions will.
        err = new PackfarmError(
          'REGISTRY_DENIED',
          `${err.message} (the token lacks ${opts.scopes?.join(' ')})`,
          {
            hint: `the credentials used for ${this.registry} are not allowed this on ${opts.ctx.repository ?? 'the registry'}: check the account's permissions (push needs write access)`,
          },
        );
      }
      if (isRetryableStatus(res.status)) {
        transientErrors.set(err, retryAfterMs !== undefined ? { retryAfterMs } : {});
      }
      throw err;
    }
  }

  /** A retry's wait, cut short (with the signal's reason) when the client or request is aborted. */
  async wait(ms: number, signal: AbortSignal | undefined = this.signal): Promise<void> {
    if (!signal) return this.retry.sleep(ms);
    signal.throwIfAborted();
    let onAbort: (() => void) | undefined;
    const aborted = new Promise<never>((_, reject) => {
      onAbort = () => reject(signal.reason);
      signal.addEventListener('abort', onAbort, { once: true });
    });
    try {
      await Promise.race([this.retry.sleep(ms), aborted]);
    } finally {
      signal.removeEventListener('abort', onAbort!);
    }
  }

  /**
   * The error for a request that got no (complete) answer. A timeout says which one fired and how to raise
   * it (REGISTRY_TIMEOUT); anything else is errorFromNetwork's.
   */
  private networkError(
    ctx: RequestContext,
    err: unknown,
    tries: { attempts: number; started: number; detail?: string },
  ): PackfarmError {
    if (err instanceof PackfarmError) return err;
    const took = Math.round((Date.now() - tries.started) / 100) / 10;
    const count =
      `${tries.attempts} attempt${tries.attempts === 1 ? '' : 's'} in ${took} s` +
      (tries.detail ? `; ${tries.detail}` : '');
    const which = firedTimeout(err);
    if (!which) {
      const e = errorFromNetwork(ctx, err);
      // A single attempt says nothing more than the cause; several (a resumed body) are worth counting.
      if (tries.attempts <= 1 && !tries.detail) return e;
      return new PackfarmError(e.code, `${e.message} (${count})`, {
        ...(e.hint !== undefined ? { hint: e.hint } : {}),
        cause: err,
      });
    }
    const { what, hint } = describeTimeout(which, this.timeouts);
    return new PackfarmError(
      'REGISTRY_TIMEOUT',
      `${ctx.method} ${displayUrl(ctx.url)} failed: ${what} (${count})`,
      { hint, cause: err },
    );
  }

  /** One attempt: redirects and one re-authentication after a 401. */
  private async sendOnce(
    opts: {
      method: string;
      url: URL;
      headers?: Record<string, string>;
      body?: Buffer | Readable;
      ctx: RequestContext;
      authorize: boolean;
      scopes?: readonly string[];
      followRedirects?: boolean;
    },
    resendable: boolean,
    signal?: AbortSignal,
  ): Promise<Omit<RegistryResponse, 'bodyError'>> {
    let url = opts.url;
    let method = opts.method;
    let body = opts.body;
    let hops = 0;
    let reauthenticated = false;
    for (;;) {
      this.checkScheme(url, opts.ctx);
      const headers: Record<string, string> = { 'user-agent': this.userAgent, ...opts.headers };
      // Credentials go to the registry's own origin only: never to a storage host a redirect points at,
      // nor to an upload Location on another host.
      const toRegistry = this.origin !== undefined && url.origin === this.origin.origin;
      if (opts.authorize && toRegistry) {
        const authz = await this.auth.authorization(opts.scopes ?? []);
        if (authz) headers.authorization = authz;
      }
      const dispatcher =
        url.protocol === 'https:' && this.unverifiedAgent && isInsecureRegistry(url.host, this.insecureList)
          ? this.unverifiedAgent
          : this.agent;
      const r = await dispatcher.request({
        origin: url.origin,
        path: `${url.pathname}${url.search}`,
        method: method as Dispatcher.HttpMethod,
        headers,
        body: body ?? null,
        ...(signal ? { signal } : {}),
      });
      const res = { status: r.statusCode, headers: r.headers, body: r.body, url };
      this.surfaceWarnings(res.headers.warning);
      if (opts.followRedirects && REDIRECT_STATUS.has(res.status)) {
        const location = headerValue(res.headers.location);
        if (location) {
          await res.body.dump().catch(() => {});
          hops++;
          if (hops > this.maxRedirects) {
            throw new PackfarmError(
              'REGISTRY_ERROR',
              `${opts.method} ${displayUrl(opts.url)}: more than ${this.maxRedirects} redirects`,
            );
          }
          url = new URL(location, url);
          if (res.status === 303 && method !== 'HEAD') {
            method = 'GET';
            body = undefined;
          }
          continue;
        }
      }
      if (res.status === 401 && opts.authorize && toRegistry && !reauthenticated) {
        const retry = await this.auth.unauthorized(res.headers['www-authenticate'], opts.scopes ?? []);
        if (retry && resendable) {
          await res.body.dump().catch(() => {});
          reauthenticated = true;
          continue;
        }
      }
      return res;
    }
  }

  private async insufficientScope(res: Pick<RegistryResponse, 'headers'>): Promise<boolean> {
    const bearer = parseWwwAuthenticate(res.headers['www-authenticate']).find((c) => c.scheme === 'bearer');
    if (bearer?.params.error !== 'insufficient_scope') return false;
    return (await this.resolveCred().catch(() => undefined)) !== undefined;
  }

  /**
   * Plain HTTP is allowed only towards a host listed as insecure, or when the registry itself is reached
   * over plain HTTP (its answers, realms and Locations included, are then unprotected anyway).
   */
  private checkScheme(url: URL, ctx: RequestContext): void {
    if (url.protocol === 'https:') return;
    if (url.protocol === 'http:') {
      if (isInsecureRegistry(url.host, this.insecureList)) return;
      if (this.insecure && url.host === this.apiHost) return;
      if (this.origin?.protocol === 'http:') return;
    }
    throw new PackfarmError(
      'REGISTRY_INSECURE_URL',
      `${ctx.registry}: refusing to send a request to ${displayUrl(url)} (plain HTTP or an unknown scheme, from a registry reached over HTTPS)`,
      { hint: `if this is intended, pass --insecure-registry ${url.host}` },
    );
  }

  private surfaceWarnings(header: string | string[] | undefined): void {
    if (!header) return;
    for (const h of Array.isArray(header) ? header : [header]) {
      // `299 - "text"`: shown, never acted on.
      const m = /^\s*299\s+\S+\s+"((?:[^"\\]|\\.)*)"/.exec(h);
      const text = m ? m[1]!.replace(/\\(.)/g, '$1') : undefined;
      if (text && !this.warned.has(text)) {
        this.warned.add(text);
        this.logger.warn(`registry ${this.registry}: ${text}`);
      }
    }
  }

  /** Close the connection pools. */
  async close(): Promise<void> {
    await Promise.all([this.agent.close(), this.unverifiedAgent?.close()]);
  }
}

/** Read a body as text, at most `max` bytes (the rest is discarded). */
export async function readText(body: Readable, max: number): Promise<string> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of body) {
    const b = chunk as Buffer;
    if (n < max) chunks.push(b.subarray(0, max - n));
    n += b.length;
    if (n >= max) {
      body.destroy();
      break;
    }
  }
  return Buffer.concat(chunks).toString('utf8');
}

/** Read a whole body that must not exceed `max` bytes (manifests, tag lists); errors name the URL. */
export async function readCapped(res: RegistryResponse, max: number, what: string): Promise<Buffer> {
  const declared = Number(headerValue(res.headers['content-length']));
  const tooLarge = () =>
    new PackfarmError(
      'TOO_LARGE',
      `${displayUrl(res.url)}: the ${what} is larger than ${max} bytes, more than packfarm accepts`,
    );
  if (Number.isFinite(declared) && declared > max) {
    res.body.destroy();
    throw tooLarge();
  }
  const chunks: Buffer[] = [];
  let n = 0;
  try {
    for await (const chunk of res.body) {
      const b = chunk as Buffer;
      n += b.length;
      if (n > max) {
        res.body.destroy();
        throw tooLarge();
      }
      chunks.push(b);
    }
  } catch (err) {
    throw res.bodyError(err);
  }
  return Buffer.concat(chunks);
}

export { headerValue };
