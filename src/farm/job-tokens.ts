import type { Credential, CredentialResolver } from '../registry/credentials.js';
import { normalizeRegistryKey } from '../registry/credentials.js';
import type { ErrorBody, JobCredential } from './protocol.js';

/**
 * A job's registry credentials while it runs (protocol 4), in the job process's memory only.
 *
 * The coordinator scoped a token per registry for the job, with its lifetime. A build may outlive it (an
 * emulated build easily takes longer than Docker Hub's 300 s), so the job asks the coordinator for a fresh
 * token of the same scopes before the current one expires (`refreshDelay`), and again when the registry
 * answers 401 all the same (a clock off, a token revoked). The build's registry clients hold one credential
 * object per registry whose `registryToken` reads the current token on every request, and whose `renew` the
 * registry client calls on a 401 before it retries.
 *
 * Only tokens the coordinator issued with an expiry are renewed; a password, or a token the user configured
 * as is, stays what it is.
 */
/** The coordinator's answer to one `token-request`: a fresh credential, or why there is none. */
export type TokenAnswer = { credential?: JobCredential | undefined; error?: ErrorBody | undefined };

export interface JobTokens {
  /** For the build's stores: the live credential of a registry of the job, else `fallback`'s. */
  resolver(fallback: CredentialResolver): CredentialResolver;
  /** The credentials as they are now (for error messages: the token that was refused, its scopes). */
  current(): JobCredential[];
  /** Ask for a fresh token for `registry` now; true once one arrived (false: none could be had). */
  renew(registry: string): Promise<boolean>;
  /** The coordinator's answer to request `id`. */
  answer(id: string, got: TokenAnswer): void;
  /** Stop the timers (the job is over). */
  close(): void;
}

export interface JobTokensOptions {
  /** Send a `token-request` for `registry` with this id (to `node serve`, which forwards it). */
  request: (id: string, registry: string) => void;
  /** A token was renewed (`renewed`); `creds` are all of them now (to refresh CNB_REGISTRY_AUTH). */
  onChange?: (creds: JobCredential[], renewed: JobCredential) => void;
  /** Diagnostics: a renewal failed (the old token is kept until it expires). */
  log?: (message: string) => void;
  now?: () => number;
  setTimer?: (fn: () => void, ms: number) => { cancel(): void };
  /** How long to wait for the coordinator's answer (default 60 s). */
  answerTimeoutMs?: number;
}

/** A token's lifetime in ms as the coordinator stated it (issue to expiry), or undefined when not renewable. */
export function tokenLifetime(c: JobCredential): number | undefined {
  if (c.registryToken === undefined || c.expiresAt === undefined || c.scopes === undefined) return undefined;
  if (c.issuedAt === undefined) return undefined;
  return Math.max(0, c.expiresAt - c.issuedAt);
}

/**
 * How long after receiving a token of `lifetimeMs` to ask for the next: leave a minute of margin for long
 * tokens (300 s → at 240 s), half the lifetime for short ones (3 s → at 1.5 s), so a slow answer or a
 * clock a little off never leaves the job without a valid token.
 */
export function refreshDelay(lifetimeMs: number): number {
  return Math.max(0, lifetimeMs - Math.min(60_000, lifetimeMs / 2));
}

const defaultTimer = (fn: () => void, ms: number) => {
  const t = setTimeout(fn, ms);
  t.unref();
  return { cancel: () => clearTimeout(t) };
};

export function createJobTokens(initial: readonly JobCredential[], opts: JobTokensOptions): JobTokens {
  const now = opts.now ?? Date.now;
  const setTimer = opts.setTimer ?? defaultTimer;
  const log = opts.log ?? (() => {});
  const creds = new Map<string, JobCredential>();
  for (const c of initial) creds.set(normalizeRegistryKey(c.registry), c);
  const timers = new Map<string, { cancel(): void }>();
  const inFlight = new Map<string, Promise<boolean>>();
  const pending = new Map<string, (got: TokenAnswer) => void>();
  const live = new Map<string, Credential>();
  let seq = 0;
  let closed = false;

  const schedule = (key: string) => {
    timers.get(key)?.cancel();
    timers.delete(key);
    const c = creds.get(key);
    const lifetime = c ? tokenLifetime(c) : undefined;
    if (closed || lifetime === undefined) return;
    timers.set(
      key,
      setTimer(() => {
        timers.delete(key);
        void renew(key);
      }, refreshDelay(lifetime)),
    );
  };

  const renew = (registry: string): Promise<boolean> => {
    const key = normalizeRegistryKey(registry);
    const c = creds.get(key);
    if (closed || !c || tokenLifetime(c) === undefined) return Promise.resolve(false);
    const running = inFlight.get(key);
    if (running) return running;
    const id = `t${++seq}`;
    const p = new Promise<boolean>((resolve) => {
      const timeout = setTimer(
        () => settle({ error: { code: 'TIMEOUT', message: 'no answer' } }),
        opts.answerTimeoutMs ?? 60_000,
      );
      const settle = (got: TokenAnswer) => {
        if (!pending.has(id)) return;
        pending.delete(id);
        timeout.cancel();
        inFlight.delete(key);
        const fresh = got.credential;
        // Only the same registry and the same scopes are taken: the job never holds more than it was given.
        if (
          fresh?.registryToken !== undefined &&
          normalizeRegistryKey(fresh.registry) === key &&
          JSON.stringify(fresh.scopes) === JSON.stringify(c.scopes)
        ) {
          const next = { ...fresh, registry: c.registry };
          creds.set(key, next);
          schedule(key);
          opts.onChange?.([...creds.values()], next);
          resolve(true);
          return;
        }
        log(
          `${c.registry}: the registry token could not be renewed (${got.error?.message ?? 'another registry or other scopes came back'}); keeping the current one until it expires`,
        );
        // Ask again later while the current token still has time left.
        const left = (c.expiresAt ?? 0) - now();
        if (!closed && left > 2_000 && creds.get(key) === c)
          timers.set(
            key,
            setTimer(() => {
              timers.delete(key);
              void renew(key);
            }, left / 2),
          );
        resolve(false);
      };
      pending.set(id, settle);
    });
    inFlight.set(key, p);
    opts.request(id, c.registry);
    return p;
  };

  for (const key of creds.keys()) schedule(key);
  return {
    resolver(fallback) {
      return async (registry) => {
        const key = normalizeRegistryKey(registry);
        const c = creds.get(key);
        if (!c) return fallback(registry);
        let cred = live.get(key);
        if (!cred) {
          if (c.registryToken !== undefined) {
            const renewable = tokenLifetime(c) !== undefined;
            cred = {
              // Read on every request: a renewed token is used from the next request on.
              get registryToken() {
                return creds.get(key)?.registryToken ?? '';
              },
              source: 'the registry token the coordinator scoped for this job',
              ...(renewable ? { renew: () => renew(registry) } : {}),
            };
          } else if (c.username !== undefined && c.password !== undefined)
            cred = { username: c.username, password: c.password, source: 'the farm job' };
          else return fallback(registry);
          live.set(key, cred);
        }
        return cred;
      };
    },
    current: () => [...creds.values()],
    renew,
    answer(id, got) {
      pending.get(id)?.(got);
    },
    close() {
      closed = true;
      for (const t of timers.values()) t.cancel();
      timers.clear();
      for (const settle of [...pending.values()])
        settle({ error: { code: 'CANCELLED', message: 'the job ended' } });
    },
  };
}
