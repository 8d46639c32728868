import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { type ImageReference, registryApiHost } from '../oci/reference.js';
import { checkPushAccess } from '../registry/access.js';
import { getBlob, headBlob, putBlob } from '../registry/blobs.js';
import type { RegistryClient } from '../registry/client.js';
import type { Credential, CredentialResolver } from '../registry/credentials.js';
import { getManifest, headManifest, putManifest } from '../registry/manifests.js';
import type { RetryOptions } from '../registry/retry.js';
import { defaultRegistryClientPool, type RegistryClientPool } from '../registry/pool.js';
import { listTags } from '../registry/tags.js';
import type { Logger } from '../util/log.js';
import type { ImageStore, PutBlobInput, PutBlobResult, StoredManifest } from './store.js';

export type RegistryOptions = {
  /** Registries reachable over plain HTTP / unverified TLS: `HOST[:PORT]`, a host alone matching any port. */
  insecureRegistries?: string[];
  /** Fixed credentials or a resolver; default: CNB_REGISTRY_AUTH, then docker config.json / helpers. */
  credentials?: Credential | CredentialResolver;
  /** Blob uploads at once per registry client (default 6). */
  concurrency?: number;
  userAgent?: string;
  retry?: RetryOptions;
  /** Environment for the default credential lookup (default process.env). */
  env?: NodeJS.ProcessEnv;
  logger?: Logger;
  /** Stops the store's requests, waits and streamed bodies (an interrupted command); see RegistryClientOptions. */
  signal?: AbortSignal;
  /** Use this client instead of one from the pool. */
  client?: RegistryClient;
  /**
   * Where the store gets its client: stores of one pool and registry share one. Pass one per unit of work that
   * may repeat in a process (a build) and close it afterwards; default: the process' pool for one-shot use.
   */
  pool?: RegistryClientPool;
};

function sameRegistry(a: string, b: string): boolean {
  return registryApiHost(a).toLowerCase() === registryApiHost(b).toLowerCase();
}

/**
 * One repository of a registry as an ImageStore. Stores of the same registry (and options) and pool share one
 * client: one token cache, one connection pool, one upload concurrency limit.
 */
export function createRegistryStore(ref: ImageReference, opts: RegistryOptions = {}): ImageStore {
  const { registry, repository } = ref;
  const client =
    opts.client ??
    (opts.pool ?? defaultRegistryClientPool()).client({
      registry,
      ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
      ...(opts.credentials !== undefined ? { credentials: opts.credentials } : {}),
      ...(opts.concurrency !== undefined ? { concurrency: opts.concurrency } : {}),
      ...(opts.userAgent !== undefined ? { userAgent: opts.userAgent } : {}),
      ...(opts.retry ? { retry: opts.retry } : {}),
      ...(opts.env ? { env: opts.env } : {}),
      ...(opts.logger ? { logger: opts.logger } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
  if (!sameRegistry(client.registry, registry)) {
    throw new Error(`createRegistryStore: client for ${client.registry} given for ${registry}`);
  }

  return {
    description: `${registry}/${repository}`,
    registryRepository: { registry, repository },

    async hasBlob(digest: Digest): Promise<boolean> {
      return (await headBlob(client, repository, digest)) !== undefined;
    },

    getBlob(digest: Digest): Promise<Readable> {
      return getBlob(client, repository, digest);
    },

    async putBlob(input: PutBlobInput): Promise<PutBlobResult> {
      const mountFrom =
        input.mountFrom && sameRegistry(input.mountFrom.registry, registry)
          ? input.mountFrom.repository
          : undefined;
      return putBlob(client, repository, {
        open: input.open,
        ...(input.digest ? { digest: input.digest } : {}),
        ...(input.size !== undefined ? { size: input.size } : {}),
        ...(mountFrom ? { mountFrom } : {}),
      });
    },

    resolve(target: string) {
      return headManifest(client, repository, target);
    },

    async getManifest(target: string): Promise<StoredManifest> {
      return getManifest(client, repository, target);
    },

    putManifest(input: { bytes: Buffer; mediaType: string; tag?: string }): Promise<Digest> {
      return putManifest(client, repository, input);
    },

    listTags(): Promise<string[]> {
      return listTags(client, repository);
    },

    checkWriteAccess(): Promise<void> {
      return checkPushAccess(client, repository);
    },
  };
}
