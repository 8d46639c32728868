import { RegistryClient, type RegistryClientOptions } from './client.js';
import { isInsecureRegistry } from './insecure.js';
import { REGISTRY_TIMEOUT_ENV } from './timeouts.js';

// Stores of one registry share a client, so they share its token cache and connection pools (a copy from
// one repository to another of the same registry then needs one token and one pool). Clients are keyed by
// everything that changes their behaviour; objects (resolvers, loggers, clocks) by identity.
const clients = new Map<string, RegistryClient>();
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
    idOf(opts.now),
  ]);
}

/** The shared client for these options (created on first use). */
export function sharedRegistryClient(opts: RegistryClientOptions): RegistryClient {
  const key = keyOf(opts);
  let client = clients.get(key);
  if (!client) {
    client = new RegistryClient(opts);
    clients.set(key, client);
  }
  return client;
}

/** Close and forget every shared client (end of a CLI run, or of a test file). */
export async function closeSharedRegistryClients(): Promise<void> {
  const all = [...clients.values()];
  clients.clear();
  await Promise.all(all.map((c) => c.close()));
}
