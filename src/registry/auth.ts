import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import { parseWith } from '../util/validate.js';
import { type AuthChallenge, findChallenge, parseWwwAuthenticate } from './challenge.js';
import type { Credential } from './credentials.js';
import { displayUrl, errorFromResponse, loginHint, refusedCredentialsError } from './errors.js';
import { mergeScopes, scopesCover } from './scope.js';

/** How a registry wants to be authenticated, from its /v2/ ping or a later 401. */
export type AuthScheme =
  | { kind: 'none' }
  | { kind: 'basic' }
  | { kind: 'bearer'; realm: string; service?: string };

/** A token request/answer as the authenticator needs it from the transport (no auth, retries included). */
export interface TokenTransport {
  send(req: {
    method: 'GET' | 'POST';
    url: URL;
    headers: Record<string, string>;
    body?: Buffer;
  }): Promise<{ status: number; text: string; url: URL; retryAfter?: string }>;
}

export interface AuthenticatorOptions {
  registry: string;
  credential: () => Promise<Credential | undefined>;
  transport: TokenTransport;
  /** Milliseconds since the epoch; tests move time forward. */
  now?: () => number;
  /** OAuth2 client_id sent with refresh-token grants. */
  clientId?: string;
}

interface CachedToken {
  realm: string;
  service: string;
  /** The scopes we asked for (canonical). A partial grant is found out by a later 401 and then dropped. */
  scopes: string[];
  token: string;
  /** Renew from this moment on (a little before the token expires). */
  renewAt: number;
  /** When the token service says it expires. */
  expiresAt: number;
}

const TokenResponseSchema = z.looseObject({
  token: z.string().optional(),
  access_token: z.string().optional(),
  expires_in: z.number().optional(),
  issued_at: z.string().optional(),
  refresh_token: z.string().optional(),
});

/** Tokens live 60 s unless the server says otherwise (distribution's token spec). */
const DEFAULT_TOKEN_LIFETIME_S = 60;

/** Pick the scheme to use from a set of challenges: Bearer when offered (it scopes access), else Basic. */
export function schemeFromChallenges(challenges: readonly AuthChallenge[]): AuthScheme | undefined {
  const bearer = findChallenge(challenges, 'bearer');
  if (bearer?.params.realm) {
    return {
      kind: 'bearer',
      realm: bearer.params.realm,
      ...(bearer.params.service !== undefined ? { service: bearer.params.service } : {}),
    };
  }
  if (findChallenge(challenges, 'basic')) return { kind: 'basic' };
  return undefined;
}

/**
 * Per-registry authentication state: the scheme the registry asked for, the credential, and a token cache
 * keyed by (realm, service, scope set). A cached token serves any request whose scopes it covers, until just
 * before it expires. When a new token is needed, the request asks for the union of what this request needs
 * and what the newest live token was asked for, so a pull token grows into a pull+push+mount token once and
 * is then reused by everything. Token fetches are serialized so that parallel requests share one fetch.
 */
export class Authenticator {
  private scheme: AuthScheme = { kind: 'none' };
  private tokens: CachedToken[] = [];
  private extraScopes: string[] = [];
  private lock: Promise<unknown> = Promise.resolve();
  private readonly now: () => number;
  /** How many token requests were made (for reports and tests). */
  tokenRequests = 0;

  constructor(private readonly opts: AuthenticatorOptions) {
    this.now = opts.now ?? Date.now;
  }

  get current(): AuthScheme {
    return this.scheme;
  }

  setScheme(scheme: AuthScheme): void {
    this.scheme = scheme;
  }

  /** The Authorization header value for a request to the registry needing `scopes`, or undefined. */
  async authorization(scopes: readonly string[]): Promise<string | undefined> {
    const cred = await this.opts.credential();
    if (cred && 'registryToken' in cred) return `Bearer ${cred.registryToken}`;
    const scheme = this.scheme;
    if (scheme.kind === 'basic') {
      return cred && 'password' in cred ? basicHeader(cred.username, cred.password) : undefined;
    }
    if (scheme.kind === 'bearer') return `Bearer ${await this.token(scheme, scopes, cred)}`;
    return undefined;
  }

  /**
   * A request was answered 401: learn from the challenge. Returns true when sending the request again may
   * now succeed (new scheme, fresh token, added scopes).
   */
  async unauthorized(header: string | string[] | undefined, scopes: readonly string[]): Promise<boolean> {
    const cred = await this.opts.credential();
    const challenges = parseWwwAuthenticate(header);
    if (cred && 'registryToken' in cred) {
      // A fixed token cannot do better; a renewable one (a farm job's) may, unless the token lacked a scope
      // (a renewed one has the same scopes).
      const lacking = findChallenge(challenges, 'bearer')?.params.error === 'insufficient_scope';
      return cred.renew && !lacking ? cred.renew() : false;
    }
    const next = schemeFromChallenges(challenges);
    if (!next) return false;
    const before = this.scheme;
    this.scheme = next;
    if (next.kind === 'basic') {
      return before.kind !== 'basic' && cred !== undefined && 'password' in cred;
    }
    const scope = findChallenge(challenges, 'bearer')?.params.scope;
    if (scope) this.extraScopes = mergeScopes([...this.extraScopes, scope]);
    // The token we used was not enough (expired early, revoked, partial grant): forget every token that
    // claimed to cover this request so the retry fetches a new one.
    this.tokens = this.tokens.filter((t) => !scopesCover(t.scopes, scopes));
    return true;
  }

  /**
   * A fresh token for exactly `scopes` (nothing merged in, nothing cached): what a farm coordinator hands a
   * node instead of the password. Needs the Bearer scheme (ping first). `expiresAt` is when the token
   * service says it stops being valid (milliseconds since the epoch, this machine's clock).
   */
  async issueToken(
    scopes: readonly string[],
  ): Promise<{ token: string; expiresAt: number; scopes: string[] }> {
    const scheme = this.scheme;
    if (scheme.kind !== 'bearer')
      throw new PackfarmError(
        'REGISTRY_ERROR',
        `${this.opts.registry} does not use bearer tokens (${scheme.kind}): no scoped token can be issued`,
      );
    const want = mergeScopes(scopes);
    const cred = await this.opts.credential();
    const entry = await this.fetchToken(scheme, want, cred);
    return { token: entry.token, expiresAt: entry.expiresAt, scopes: want };
  }

  private token(
    scheme: Extract<AuthScheme, { kind: 'bearer' }>,
    scopes: readonly string[],
    cred: Credential | undefined,
  ): Promise<string> {
    const run = async () => {
      const service = scheme.service ?? '';
      const now = this.now();
      this.tokens = this.tokens.filter((t) => t.renewAt > now);
      const mine = this.tokens.filter((t) => t.realm === scheme.realm && t.service === service);
      const hit = mine.find((t) => scopesCover(t.scopes, scopes));
      if (hit) return hit.token;
      const newest = mine.at(-1);
      const want = mergeScopes([...scopes, ...(newest?.scopes ?? []), ...this.extraScopes]);
      const entry = await this.fetchToken(scheme, want, cred);
      this.tokens.push(entry);
      return entry.token;
    };
    const p = this.lock.then(run, run);
    this.lock = p.catch(() => undefined);
    return p;
  }

  private async fetchToken(
    scheme: Extract<AuthScheme, { kind: 'bearer' }>,
    scopes: string[],
    cred: Credential | undefined,
  ): Promise<CachedToken> {
    let realm: URL;
    try {
      realm = new URL(scheme.realm);
    } catch {
      throw new PackfarmError(
        'REGISTRY_ERROR',
        `${this.opts.registry} sent a token realm that is not a URL: ${JSON.stringify(scheme.realm)}`,
      );
    }
    const service = scheme.service;
    let res: Awaited<ReturnType<TokenTransport['send']>> | undefined;
    if (cred && 'identityToken' in cred) {
      // OAuth2 refresh-token grant; registries without the OAuth2 endpoint answer 404 (some 405), and then
      // the classic GET is used with the identity token as the Basic secret.
      const form = new URLSearchParams();
      form.set('grant_type', 'refresh_token');
      form.set('refresh_token', cred.identityToken);
      form.set('client_id', this.opts.clientId ?? 'packfarm');
      if (service !== undefined) form.set('service', service);
      if (scopes.length > 0) form.set('scope', scopes.join(' '));
      res = await this.opts.transport.send({
        method: 'POST',
        url: realm,
        headers: { 'content-type': 'application/x-www-form-urlencoded' },
        body: Buffer.from(form.toString()),
      });
      if (res.status === 404 || res.status === 405) res = undefined;
    }
    if (!res) {
      const url = new URL(realm);
      if (service !== undefined) url.searchParams.set('service', service);
      for (const s of scopes) url.searchParams.append('scope', s);
      const headers: Record<string, string> = {};
      if (cred && 'password' in cred) {
        url.searchParams.set('account', cred.username);
        headers.authorization = basicHeader(cred.username, cred.password);
      } else if (cred && 'identityToken' in cred) {
        headers.authorization = basicHeader(cred.username ?? '<token>', cred.identityToken);
      }
      this.tokenRequests++;
      res = await this.opts.transport.send({ method: 'GET', url, headers });
    } else {
      this.tokenRequests++;
    }
    const ctx = { method: 'GET', url: realm, registry: this.opts.registry, what: 'token' as const };
    if (res.status === 401 || res.status === 403) {
      const err = new PackfarmError(
        'REGISTRY_UNAUTHORIZED',
        `the token service ${displayUrl(realm)} answered HTTP ${res.status} for ${scopes.join(' ') || 'the registry'}`,
        { hint: loginHint(this.opts.registry) },
      );
      if (cred) throw refusedCredentialsError(this.opts.registry, cred.source, err);
      throw new PackfarmError('REGISTRY_UNAUTHORIZED', `${err.message}: anonymous access refused`, {
        hint: loginHint(this.opts.registry),
      });
    }
    if (res.status !== 200) {
      throw errorFromResponse(ctx, res.status, res.text, {
        ...(res.retryAfter !== undefined ? { retryAfter: res.retryAfter } : {}),
      });
    }
    let json: unknown;
    try {
      json = JSON.parse(res.text);
    } catch {
      throw new PackfarmError(
        'REGISTRY_ERROR',
        `the token service ${displayUrl(realm)} answered something that is not JSON`,
      );
    }
    const body = parseWith(
      TokenResponseSchema,
      json,
      `token response from ${displayUrl(realm)}`,
      'REGISTRY_ERROR',
    );
    const token = body.token || body.access_token;
    if (!token) {
      throw new PackfarmError(
        'REGISTRY_ERROR',
        `the token response from ${displayUrl(realm)} holds neither "token" nor "access_token"`,
      );
    }
    const lifetimeMs =
      (body.expires_in !== undefined && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_LIFETIME_S) *
      1000;
    // Renew slightly early so a token never expires between our check and the registry's.
    const margin = Math.min(10_000, lifetimeMs / 10);
    return {
      realm: scheme.realm,
      service: service ?? '',
      scopes,
      token,
      renewAt: this.now() + lifetimeMs - margin,
      expiresAt: this.now() + lifetimeMs,
    };
  }
}

export function basicHeader(username: string, password: string): string {
  return `Basic ${Buffer.from(`${username}:${password}`, 'utf8').toString('base64')}`;
}
