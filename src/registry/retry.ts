/**
 * Retry policy for registry requests: bounded attempts, exponential backoff with jitter, and the registry's
 * own Retry-After when it sends one. Only requests that can be sent again unchanged are retried (the caller
 * decides that); a request whose body was a one-shot stream is retried one level up, by re-opening the
 * source and starting the upload over.
 */
export interface RetryOptions {
  /** Total attempts including the first (default 4; 1 disables retries). */
  attempts?: number;
  /** First backoff step (default 250 ms); doubled per attempt. */
  baseDelayMs?: number;
  /** Upper bound of one backoff step (default 8 s). */
  maxDelayMs?: number;
  /** Longest Retry-After we are willing to wait (default 60 s); a longer one fails at once, naming it. */
  maxRetryAfterMs?: number;
  /** How to wait; tests replace it to observe the delays without waiting. */
  sleep?: (ms: number) => Promise<void>;
  /** Source of randomness for jitter, in [0, 1). */
  random?: () => number;
}

export type ResolvedRetry = Required<RetryOptions>;

export function resolveRetry(opts: RetryOptions = {}): ResolvedRetry {
  return {
    attempts: Math.max(1, Math.floor(opts.attempts ?? 4)),
    baseDelayMs: Math.max(0, opts.baseDelayMs ?? 250),
    maxDelayMs: Math.max(0, opts.maxDelayMs ?? 8_000),
    maxRetryAfterMs: Math.max(0, opts.maxRetryAfterMs ?? 60_000),
    sleep: opts.sleep ?? ((ms) => new Promise((resolve) => setTimeout(resolve, ms))),
    random: opts.random ?? Math.random,
  };
}

/** Statuses worth another try: timeouts, rate limits and server-side failures that are usually transient. */
const RETRYABLE_STATUS = new Set([408, 429, 500, 502, 503, 504]);

export function isRetryableStatus(status: number): boolean {
  return RETRYABLE_STATUS.has(status);
}

// Connection-level failures that say nothing about the request itself. ECONNREFUSED is not here: a registry
// that is not listening usually stays so, and failing fast gives the user the useful hint sooner.
const RETRYABLE_CODES = new Set([
  'ECONNRESET',
  'ETIMEDOUT',
  'EPIPE',
  'ECONNABORTED',
  'EAI_AGAIN',
  'UND_ERR_SOCKET',
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'UND_ERR_CLOSED',
]);

export function isRetryableNetworkError(err: unknown): boolean {
  for (let e: unknown = err, depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (typeof code === 'string' && RETRYABLE_CODES.has(code)) return true;
    e = (e as { cause?: unknown }).cause;
  }
  return false;
}

/**
 * Retry-After as milliseconds from `now`: delta-seconds or an HTTP date. undefined when absent or unreadable.
 */
export function parseRetryAfter(value: string | undefined, now = Date.now()): number | undefined {
  if (value === undefined) return undefined;
  const v = value.trim();
  if (/^\d+$/.test(v)) return Number(v) * 1000;
  const date = Date.parse(v);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

/**
 * Backoff before retry number `retry` (1 for the first retry): "equal jitter", half fixed and half random,
 * so waits grow but concurrent clients do not retry in lockstep.
 */
export function backoffDelay(retry: number, policy: ResolvedRetry): number {
  const step = Math.min(policy.maxDelayMs, policy.baseDelayMs * 2 ** Math.max(0, retry - 1));
  return Math.round(step / 2 + (step / 2) * policy.random());
}

/**
 * The wait before the next attempt, or undefined when the registry asked for more than we accept to wait.
 * A Retry-After is honoured as given (not shortened); otherwise the jittered backoff applies.
 */
export function retryDelay(retry: number, policy: ResolvedRetry, retryAfterMs?: number): number | undefined {
  if (retryAfterMs !== undefined) {
    if (retryAfterMs > policy.maxRetryAfterMs) return undefined;
    return retryAfterMs;
  }
  return backoffDelay(retry, policy);
}
