import { PackfarmError } from '../util/errors.js';

/**
 * How long packfarm waits on a registry before calling it silent. Each bound names its own failure, so a
 * message can say which one fired:
 * - connect: TCP connect plus TLS handshake;
 * - headers: from the request sent to the complete response headers (a registry dripping its headers byte
 *   by byte still hits it);
 * - body idle: the longest pause between two chunks of a response body;
 * - deadline: everything one request may take across its retries and their waits, up to its response
 *   (and, for documents read whole such as manifests and tokens, their bodies). Streamed uploads and blob
 *   bodies are bounded by the idle and headers timeouts only: a large layer may rightly take long. A blob
 *   download resumed after a stall is bounded by the deadline counted from its last delivered byte
 *   (blob-download.ts).
 */
export interface RegistryTimeouts {
  connectMs: number;
  headersMs: number;
  bodyIdleMs: number;
  deadlineMs: number;
}

export const DEFAULT_REGISTRY_TIMEOUTS: RegistryTimeouts = {
  connectMs: 15_000,
  headersMs: 60_000,
  bodyIdleMs: 60_000,
  deadlineMs: 300_000,
};

/** The environment variables (seconds) that set each timeout, for flags-less configuration and hints. */
export const REGISTRY_TIMEOUT_ENV: Record<keyof RegistryTimeouts, string> = {
  connectMs: 'PACKFARM_REGISTRY_CONNECT_TIMEOUT',
  headersMs: 'PACKFARM_REGISTRY_HEADERS_TIMEOUT',
  bodyIdleMs: 'PACKFARM_REGISTRY_BODY_TIMEOUT',
  deadlineMs: 'PACKFARM_REGISTRY_DEADLINE',
};

/** Defaults, overridden by the environment, overridden by explicit options. */
export function resolveRegistryTimeouts(
  env: NodeJS.ProcessEnv,
  explicit: Partial<RegistryTimeouts> = {},
): RegistryTimeouts {
  const out = { ...DEFAULT_REGISTRY_TIMEOUTS };
  for (const key of Object.keys(REGISTRY_TIMEOUT_ENV) as Array<keyof RegistryTimeouts>) {
    const name = REGISTRY_TIMEOUT_ENV[key];
    const raw = env[name];
    if (raw !== undefined && raw.trim() !== '') {
      const seconds = Number(raw);
      if (!Number.isFinite(seconds) || seconds <= 0)
        throw new PackfarmError('INVALID_ENV', `${name}="${raw}" is not a positive number of seconds`, {
          hint: `e.g. ${name}=30 (unset it for the default of ${DEFAULT_REGISTRY_TIMEOUTS[key] / 1000} s)`,
        });
      out[key] = Math.round(seconds * 1000);
    }
    const given = explicit[key];
    if (given !== undefined) out[key] = given;
  }
  return out;
}

/** Which timeout an undici error (or one of its causes) reports, if any. */
export function firedTimeout(err: unknown): keyof RegistryTimeouts | undefined {
  for (let e: unknown = err, depth = 0; e && depth < 4; depth++) {
    const code = (e as { code?: unknown }).code;
    if (code === 'UND_ERR_CONNECT_TIMEOUT') return 'connectMs';
    if (code === 'UND_ERR_HEADERS_TIMEOUT') return 'headersMs';
    if (code === 'UND_ERR_BODY_TIMEOUT') return 'bodyIdleMs';
    if (e instanceof DeadlineError) return 'deadlineMs';
    e = (e as { cause?: unknown }).cause;
  }
  return undefined;
}

/** The abort reason when a request's overall deadline passes. */
export class DeadlineError extends Error {
  override readonly name = 'DeadlineError';
}

const WHAT: Record<keyof RegistryTimeouts, string> = {
  connectMs: 'connect timeout',
  headersMs: 'response-headers timeout',
  bodyIdleMs: 'body idle timeout',
  deadlineMs: 'overall deadline',
};

/** "the response-headers timeout (60 s) fired" and the hint to raise it. */
export function describeTimeout(
  which: keyof RegistryTimeouts,
  timeouts: RegistryTimeouts,
): { what: string; hint: string } {
  const s = timeouts[which] / 1000;
  return {
    what: `the ${WHAT[which]} (${s} s) fired`,
    hint: `the registry stopped answering; if it is just slow, raise ${REGISTRY_TIMEOUT_ENV[which]} (seconds, now ${s})`,
  };
}
