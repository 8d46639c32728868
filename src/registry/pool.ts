import { RegistryClient, type RegistryClientOptions } from './client.js';
import { isInsecureRegistry } from './insecure.js';
import { REGISTRY_TIMEOUT_ENV } from './timeouts.js';

/**
 * Registry clients shared by the stores of one unit of work (a build, a copy): stores of one registry then
 * share its token cache and connection pools (a copy from one repository to another of the same registry
 * needs one token and one pool). A pool lives as long as its work and is closed with it, so a long-running
 * node with per-job credentials does not keep one client per job forever.
 */
export interface RegistryClientPool {
  /** The pool's client for these options (created on first use). */
  client(opts: RegistryClientOptions): RegistryClient;
  /** Clients the pool holds. */
  readonly size: number;
  /** Close and forget every client. */
  close(): Promise<void>;
}

// Clients are keyed by everything that changes their behaviour; objects (resolvers, loggers, clocks) by
// identity. The ids are weak: they keep nothing alive.
const ids = new WeakMap<object, number>();
let nextId = 1;

function idOf(v: unknown): string {
  if (v === undefined) return '-';
  if (typeof v !== 'object' && typeof v !== 'function') return JSON.stringify(v);
  const o = v as object;
  let id = ids.get(o);
  if (id === undefined) {
    id = nextId++;
    ids.set(o, id);
  }
  return `#${id}`;
}

function keyOf(opts: RegistryClientOptions): string {
  const env = opts.env ?? process.env;
  const retry = opts.retry ?? {};
  return JSON.stringify([
    opts.registry,
    isInsecureRegistry(opts.registry, opts.insecureRegistries ?? []),
    [...(opts.insecureRegistries ?? [])].sort(),
    // Without explicit credentials, the lookup depends on these variables.
    opts.credentials === undefined
      ? [env.CNB_REGISTRY_AUTH ?? '', env.DOCKER_CONFIG ?? '', env.HOME ?? '', env.PATH ?? '']
      : idOf(opts.credentials),
    opts.concurrency ?? null,
    opts.userAgent ?? null,
    [
      retry.attempts,
      retry.baseDelayMs,
      retry.maxDelayMs,
      retry.maxRetryAfterMs,
      idOf(retry.sleep),
      idOf(retry.random),
    ],
    opts.maxRedirects ?? null,
    opts.monolithicUploadMaxBytes ?? null,
    opts.connectTimeoutMs ?? null,
    opts.timeouts ?? null,
    Object.values(REGISTRY_TIMEOUT_ENV).map((name) => env[name] ?? ''),
    idOf(opts.logger),
    idOf(opts.signal),
    idOf(opts.now),
  ]);
}

export function createRegistryClientPool(): RegistryClientPool {
  const clients = new Map<string, RegistryClient>();
  return {
    client(opts) {
      const key = keyOf(opts);
      let client = clients.get(key);
      if (!client) {
        client = new RegistryClient(opts);
        clients.set(key, client);
      }
      return client;
    },
    get size() {
      return clients.size;
    },
    async close() {
      const all = [...clients.values()];
      clients.clear();
      await Promise.all(all.map((c) => c.close()));
    },
  };
}

/**
 * The pool of stores opened without one: one-shot CLI commands and library callers that do not pass a pool.
 * Work that may run many times in one process (a build, which a farm node runs per job) passes its own pool.
 */
const defaultPool = createRegistryClientPool();

export function defaultRegistryClientPool(): RegistryClientPool {
  return defaultPool;
}
