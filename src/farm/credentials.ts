import type { BuildPlan, TargetPlan } from '../api/plan.js';
import { parseImageLocation } from '../image/transport.js';
import { RegistryClient } from '../registry/client.js';
import { type Credential, createKeychain, normalizeRegistryKey } from '../registry/credentials.js';
import { repositoryScope } from '../registry/scope.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import type { JobCredential } from './protocol.js';
import { projectBuildpacksInUse } from '../api/buildpacks.js';

/**
 * The registry credentials a node gets for one target: the narrowest that work.
 *
 * - A registry using bearer tokens: the coordinator asks the token service for one token per registry,
 *   scoped to exactly the repositories and actions the target needs — pull and push on the output and cache
 *   repositories, pull on the run image, build image, builder, previous image and registry buildpacks (pull on
 *   a blob's source repository is also what a cross-repository mount into the output needs) — and sends that
 *   token with its expiry. The password stays on this machine.
 * - A registry with Basic auth only (htpasswd): a password cannot be scoped; it is sent for the registries
 *   the target touches and no other. Likewise a bearer token the user configured as is (`registrytoken`).
 * - A registry that needs no auth, or no credential for it here: nothing is sent.
 */
export type JobAccess = Map<string, Map<string, Set<'pull' | 'push'>>>;

/** Registry → repository → actions: what one target's job does at which repository. */
export function jobAccess(plan: BuildPlan, target: TargetPlan): JobAccess {
  const access: JobAccess = new Map();
  const grant = (registry: string, repository: string, actions: Array<'pull' | 'push'>) => {
    const repos = access.get(registry) ?? new Map<string, Set<'pull' | 'push'>>();
    const set = repos.get(repository) ?? new Set<'pull' | 'push'>();
    for (const a of actions) set.add(a);
    repos.set(repository, set);
    access.set(registry, repos);
  };
  const byRef = (ref: string | undefined, actions: Array<'pull' | 'push'>) => {
    if (!ref) return;
    try {
      const loc = parseImageLocation(ref);
      if (loc.transport === 'docker') grant(loc.reference.registry, loc.reference.repository, actions);
    } catch {
      // not an image reference (planning already checked what it had to)
    }
  };
  const byStore = (
    store: { registryRepository?: { registry: string; repository: string } } | undefined,
    actions: Array<'pull' | 'push'>,
  ) => {
    const r = store?.registryRepository;
    if (r) grant(r.registry, r.repository, actions);
  };
  const o = plan.options;
  // The node pushes its image to the first output only (the coordinator copies it to --tag repositories).
  byStore(plan.outputs[0]?.store, ['pull', 'push']);
  if (plan.cache?.location.kind === 'image') byStore(plan.cache.location.store, ['pull', 'push']);
  byRef(o.cacheImage, ['pull', 'push']);
  byStore(plan.previousImage?.store, ['pull']);
  byRef(o.previousImage, ['pull']);
  byRef(target.runImage.name, ['pull']);
  byStore(target.runImage.store, ['pull']);
  byStore(target.buildImage?.store, ['pull']);
  byRef(o.buildImage, ['pull']);
  byRef(target.builder ?? o.builder ?? plan.project?.builder, ['pull']);
  // Registry buildpackages the node pulls: --buildpack docker://…, and the project.toml uris this build runs.
  const uris = [
    ...o.buildpacks,
    ...projectBuildpacksInUse(o.buildpacks, plan.project).map((b) => (b.script ? undefined : b.uri)),
  ];
  for (const u of uris) if (u?.startsWith('docker://')) byRef(u.slice('docker://'.length), ['pull']);
  return access;
}

/** The access as token scopes, per registry: `repository:NAME:pull,push`, sorted. */
export function accessScopes(repos: Map<string, Set<'pull' | 'push'>>): string[] {
  return [...repos.entries()].map(([repo, actions]) => repositoryScope(repo, [...actions].sort())).sort();
}

export interface ScopedCredentialOptions {
  env: NodeJS.ProcessEnv;
  insecureRegistries: readonly string[];
  /** The user's credential per registry (default: the keychain of `env`). */
  credential?: (registry: string) => Promise<Credential | undefined>;
}

/** The credentials to send with one target's job (see the module comment). */
export async function scopedJobCredentials(
  plan: BuildPlan,
  target: TargetPlan,
  opts: ScopedCredentialOptions,
): Promise<JobCredential[]> {
  const keychain = opts.credential ?? createKeychain({ env: opts.env });
  const access = jobAccess(plan, target);
  const out: JobCredential[] = [];
  // One entry per registry host however it was spelled.
  const registries = new Map<string, string>();
  for (const r of access.keys())
    if (!registries.has(normalizeRegistryKey(r))) registries.set(normalizeRegistryKey(r), r);
  for (const registry of [...registries.values()].sort()) {
    const repos = new Map<string, Set<'pull' | 'push'>>();
    for (const [r, rs] of access)
      if (normalizeRegistryKey(r) === normalizeRegistryKey(registry))
        for (const [repo, actions] of rs) repos.set(repo, new Set([...(repos.get(repo) ?? []), ...actions]));
    const cred = await keychain(registry).catch(() => undefined);
    if (!cred) continue;
    if ('registryToken' in cred) {
      out.push({ registry, registryToken: cred.registryToken });
      continue;
    }
    const got = await withRegistry(registry, cred, opts, async (client, auth) => {
      if (auth === 'bearer') return issueScoped(client, registry, accessScopes(repos));
      // An identity token is a refresh token for a token service; a Basic-only registry has none.
      if (auth === 'basic' && 'password' in cred)
        return { registry, username: cred.username, password: cred.password };
      return undefined; // auth 'none': the registry is open, the node needs nothing.
    });
    if (got) out.push(got);
  }
  return out;
}

async function withRegistry<T>(
  registry: string,
  cred: Credential,
  opts: ScopedCredentialOptions,
  use: (client: RegistryClient, auth: 'none' | 'basic' | 'bearer') => Promise<T>,
): Promise<T> {
  const client = new RegistryClient({
    registry,
    insecureRegistries: opts.insecureRegistries,
    credentials: cred,
    env: opts.env,
  });
  try {
    return await use(client, (await client.ping()).auth);
  } finally {
    await client.close();
  }
}

async function issueScoped(
  client: RegistryClient,
  registry: string,
  scopes: string[],
): Promise<JobCredential> {
  const t = await client.auth.issueToken(scopes);
  // Taken after the token service answered: `expiresAt - issuedAt` errs short, never long.
  const issuedAt = Date.now();
  return { registry, registryToken: t.token, expiresAt: t.expiresAt, scopes: t.scopes, issuedAt };
}

/**
 * A running job asks for a fresh token (protocol 4): issued for exactly the scopes of the token the job was
 * given for that registry — never wider, never the password. Only a scoped token the coordinator issued is
 * renewed; a password or a raw token the user configured is not a token of ours (the job keeps what it has).
 */
export async function renewJobCredential(
  granted: readonly JobCredential[],
  registry: string,
  opts: ScopedCredentialOptions,
): Promise<JobCredential> {
  const key = normalizeRegistryKey(registry);
  const mine = granted.find(
    (c) =>
      normalizeRegistryKey(c.registry) === key && c.registryToken !== undefined && c.scopes !== undefined,
  );
  if (!mine?.scopes || mine.expiresAt === undefined)
    throw new PackfarmError(
      'PROTOCOL_ERROR',
      `${registry}: this job was given no scoped token there, so there is none to renew`,
    );
  const scopes = mine.scopes;
  const keychain = opts.credential ?? createKeychain({ env: opts.env });
  const cred = await keychain(mine.registry);
  if (!cred || 'registryToken' in cred)
    throw new PackfarmError(
      'REGISTRY_UNAUTHORIZED',
      `${mine.registry}: the coordinator no longer has a credential to issue a token with`,
      { hint: `log in to ${mine.registry} on the coordinator (packfarm login)` },
    );
  return withRegistry(mine.registry, cred, opts, async (client, auth) => {
    if (auth !== 'bearer')
      throw new PackfarmError(
        'REGISTRY_ERROR',
        `${mine.registry} no longer uses bearer tokens (${auth}): no token to renew`,
      );
    return issueScoped(client, mine.registry, scopes);
  });
}

/**
 * A registry refused the job (401/403): when the node held a scoped token for that registry, say so — expired
 * (FARM_TOKEN_EXPIRED: the build outlived the token, and renewing it failed) or refused (the token covers only its scopes). Other
 * errors pass through unchanged.
 */
export function explainCredentialError(
  err: unknown,
  credentials: readonly JobCredential[],
  now: number = Date.now(),
): unknown {
  if (!isPackfarmError(err) || (err.code !== 'REGISTRY_UNAUTHORIZED' && err.code !== 'REGISTRY_DENIED'))
    return err;
  const tokens = credentials.filter((c) => c.registryToken !== undefined && c.expiresAt !== undefined);
  const named = tokens.filter((c) => err.message.includes(c.registry));
  const token = (named.length > 0 ? named : tokens.length === 1 ? tokens : [])[0];
  if (!token || token.expiresAt === undefined) return err;
  const scopes = (token.scopes ?? []).join(' ') || 'no repository';
  const at = new Date(token.expiresAt).toISOString();
  if (token.expiresAt <= now)
    return new PackfarmError(
      'FARM_TOKEN_EXPIRED',
      `${token.registry}: the registry token the coordinator scoped for this job (${scopes}) expired at ${at}, ${Math.round((now - token.expiresAt) / 1000)} s ago: ${err.message}`,
      {
        hint: "the build outlived the token and the coordinator could not renew it (was the connection lost, or the coordinator's login removed?): build again, or raise the lifetime on the token service",
        cause: err,
      },
    );
  return new PackfarmError(
    err.code,
    `${token.registry} refused the registry token the coordinator scoped for this job (${scopes}; expires ${at}): ${err.message}`,
    {
      hint: 'the node may only do what the target needs there: a repository outside these scopes, or an action the account lacks, is refused',
      cause: err,
    },
  );
}
