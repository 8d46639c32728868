import { spawn } from 'node:child_process';
import { homedir } from 'node:os';
import { isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { DOCKER_HUB } from '../oci/reference.js';
import { PackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';
import { splitHostPort } from './insecure.js';
import { readFileIfExists } from '../util/fs.js';

/**
 * What we can authenticate with at one registry:
 *   - username + password: Basic to a Basic registry, or to the token realm of a Bearer registry;
 *   - identityToken: an OAuth2 refresh token (docker config `identitytoken`, or a credential helper answering
 *     Username "<token>"), exchanged at the realm with grant_type=refresh_token;
 *   - registryToken: a bearer token sent to the registry as is (`registrytoken`, or `Bearer …` in
 *     CNB_REGISTRY_AUTH).
 */
export type Credential = (
  | { username: string; password: string }
  | { identityToken: string; username?: string }
  | {
      registryToken: string;
      /**
       * A token that can be replaced (a farm job's scoped token): the client calls this on a 401 and retries
       * once when it resolves true, reading `registryToken` again.
       */
      renew?: () => Promise<boolean>;
    }
) & {
  /** Where it came from (a file and its entry, a helper, CNB_REGISTRY_AUTH), for "refused" messages. */
  source?: string;
};

/** Finds the credential for a registry (host[:port] as in image references, docker.io for Docker Hub). */
export type CredentialResolver = (registry: string) => Promise<Credential | undefined>;

/** The key Docker Hub credentials are stored under in config.json, and the URL helpers are asked for. */
export const DOCKER_HUB_AUTH_KEY = 'https://index.docker.io/v1/';

const HUB_ALIASES = new Set([
  'docker.io',
  'index.docker.io',
  'registry-1.docker.io',
  'registry.hub.docker.com',
]);

/**
 * Normalize a config.json `auths` key or a registry name to a comparable host[:port]: scheme and path are
 * dropped, the host lower-cased, and Docker Hub's aliases (index.docker.io/v1/, registry-1.docker.io …)
 * become docker.io.
 */
export function normalizeRegistryKey(key: string): string {
  const { host, port } = splitHostPort(key);
  if (HUB_ALIASES.has(host) && (port === undefined || port === '443')) return DOCKER_HUB;
  const h = host.includes(':') ? `[${host}]` : host;
  return port === undefined ? h : `${h}:${port}`;
}

/** The server URL credential helpers are asked for (what `docker login` stores under). */
export function helperServerUrl(registry: string): string {
  return normalizeRegistryKey(registry) === DOCKER_HUB ? DOCKER_HUB_AUTH_KEY : registry;
}

const AuthEntrySchema = z.looseObject({
  auth: z.string().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  identitytoken: z.string().optional(),
  registrytoken: z.string().optional(),
});

const DockerConfigSchema = z.looseObject({
  auths: z.record(z.string(), AuthEntrySchema).optional(),
  credHelpers: z.record(z.string(), z.string()).optional(),
  credsStore: z.string().optional(),
});
export type DockerConfig = z.infer<typeof DockerConfigSchema>;

/**
 * The containers-auth.json files podman, skopeo and buildah log in to, in the order they read them
 * (containers-auth.json(5)): the primary file — `REGISTRY_AUTH_FILE`, else `$XDG_RUNTIME_DIR/containers/
 * auth.json`, else `/run/containers/<uid>/auth.json` (podman's default when XDG_RUNTIME_DIR is unset) —
 * then `$XDG_CONFIG_HOME/containers/auth.json` (default `~/.config`). The docker config comes after these.
 */
export function containersAuthPaths(env: NodeJS.ProcessEnv = process.env): string[] {
  const home = env.HOME || homedir();
  const configHome =
    env.XDG_CONFIG_HOME && isAbsolute(env.XDG_CONFIG_HOME) ? env.XDG_CONFIG_HOME : join(home, '.config');
  return [primaryAuthFile(env), join(configHome, 'containers', 'auth.json')];
}

/** Where `packfarm login` writes, as `podman login` does (see containersAuthPaths). */
export function primaryAuthFile(env: NodeJS.ProcessEnv = process.env): string {
  if (env.REGISTRY_AUTH_FILE) return resolve(env.REGISTRY_AUTH_FILE);
  if (env.XDG_RUNTIME_DIR && isAbsolute(env.XDG_RUNTIME_DIR))
    return join(env.XDG_RUNTIME_DIR, 'containers', 'auth.json');
  return join('/run/containers', String(process.getuid?.() ?? 0), 'auth.json');
}

/** Every file credentials are read from, in order: containers-auth.json files, then the docker config. */
export function credentialFiles(env: NodeJS.ProcessEnv = process.env): string[] {
  return [...new Set([...containersAuthPaths(env), dockerConfigPath(env)])];
}

/** `$DOCKER_CONFIG/config.json`, else `~/.docker/config.json` (HOME from `env` when set). */
export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  if (env.DOCKER_CONFIG) return join(env.DOCKER_CONFIG, 'config.json');
  return join(env.HOME || homedir(), '.docker', 'config.json');
}

/** The docker config file, validated; undefined when it does not exist. */
export async function readDockerConfig(path: string): Promise<DockerConfig | undefined> {
  let text: string | undefined;
  try {
    text = await readFileIfExists(path);
  } catch (err) {
    throw new PackfarmError('CREDENTIALS_UNREADABLE', `${path}: cannot read: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (text === undefined) return undefined;
  if (text.trim() === '') return {};
  return parseWith(DockerConfigSchema, parseJson(text, path), path, 'CREDENTIALS_INVALID');
}

function decodeBasic(b64: string, source: string): { username: string; password: string } {
  const text = Buffer.from(b64.trim(), 'base64').toString('utf8');
  const colon = text.indexOf(':');
  if (colon < 0) {
    throw new PackfarmError(
      'CREDENTIALS_INVALID',
      `${source}: the value is not base64 of "username:password"`,
      { hint: 'encode it with: printf %s "user:password" | base64' },
    );
  }
  return { username: text.slice(0, colon), password: text.slice(colon + 1) };
}

/** One `auths` entry as a credential; undefined for an entry without any (as `docker login` with a store leaves). */
export function credentialFromAuthEntry(
  entry: z.infer<typeof AuthEntrySchema>,
  source: string,
): Credential | undefined {
  if (entry.registrytoken) return { registryToken: entry.registrytoken, source };
  if (entry.identitytoken) {
    return {
      identityToken: entry.identitytoken,
      ...(entry.username ? { username: entry.username } : {}),
      source,
    };
  }
  if (entry.auth) return { ...decodeBasic(entry.auth, `${source} auth`), source };
  if (entry.username !== undefined && entry.password !== undefined)
    return { username: entry.username, password: entry.password, source };
  return undefined;
}

/**
 * CNB_REGISTRY_AUTH (the lifecycle's variable): a JSON object from registry to an Authorization header value,
 * `"Basic <base64 user:pass>"` or `"Bearer <token>"`. Keys are normalized like config.json keys.
 */
export function parseCnbRegistryAuth(value: string, source = 'CNB_REGISTRY_AUTH'): Map<string, Credential> {
  const doc = parseWith(
    z.record(z.string(), z.string()),
    parseJson(value, source),
    source,
    'CREDENTIALS_INVALID',
  );
  const out = new Map<string, Credential>();
  for (const [registry, header] of Object.entries(doc)) {
    const m = /^\s*(\S+)\s+(\S.*?)\s*$/.exec(header);
    const scheme = m?.[1]?.toLowerCase();
    const where = `${source} ${JSON.stringify(registry)}`;
    let cred: Credential;
    if (m && scheme === 'basic') cred = decodeBasic(m[2]!, where);
    else if (m && scheme === 'bearer') cred = { registryToken: m[2]! };
    else {
      throw new PackfarmError(
        'CREDENTIALS_INVALID',
        `${where}: expected "Basic <base64 user:pass>" or "Bearer <token>", got ${JSON.stringify(header.slice(0, 12))}…`,
      );
    }
    out.set(normalizeRegistryKey(registry), { ...cred, source: where });
  }
  return out;
}

export interface CredentialHelperOptions {
  env?: NodeJS.ProcessEnv;
  /** Bound on one helper run (default 30 s): helpers may prompt or hang on a locked keychain. */
  timeoutMs?: number;
}

const HelperOutputSchema = z.looseObject({
  ServerURL: z.string().optional(),
  Username: z.string().optional(),
  Secret: z.string().optional(),
});

/**
 * Run `docker-credential-<name> get` with the server URL on stdin. "credentials not found" (or an empty
 * answer) means no credential; any other failure is an error naming the helper.
 */
export async function runCredentialHelper(
  name: string,
  serverUrl: string,
  opts: CredentialHelperOptions = {},
): Promise<Credential | undefined> {
  if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(name)) {
    throw new PackfarmError(
      'CREDENTIALS_INVALID',
      `credential helper name ${JSON.stringify(name)} is not valid`,
    );
  }
  const bin = `docker-credential-${name}`;
  const { code, stdout, stderr, spawnError } = await new Promise<{
    code: number | null;
    stdout: string;
    stderr: string;
    spawnError?: NodeJS.ErrnoException;
  }>((resolve) => {
    const child = spawn(bin, ['get'], { env: opts.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 30_000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      if (out.length < 1_000_000) out += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      if (err.length < 10_000) err += d;
    });
    child.on('error', (e: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      resolve({ code: null, stdout: out, stderr: err, spawnError: e });
    });
    child.on('close', (c) => {
      clearTimeout(timer);
      resolve({ code: c, stdout: out, stderr: err });
    });
    child.stdin.on('error', () => {}); // a helper that exits without reading stdin
    child.stdin.end(serverUrl);
  });
  if (spawnError) {
    throw new PackfarmError(
      'CREDENTIAL_HELPER_FAILED',
      `credential helper ${bin} could not be run: ${spawnError.code ?? spawnError.message}`,
      {
        hint: `install ${bin} on PATH, or remove it from "credHelpers"/"credsStore" in your docker config.json`,
        cause: spawnError,
      },
    );
  }
  if (/credentials not found/i.test(stdout) || /credentials not found/i.test(stderr)) return undefined;
  if (code !== 0) {
    throw new PackfarmError(
      'CREDENTIAL_HELPER_FAILED',
      `credential helper ${bin} failed for ${serverUrl} (exit ${code ?? 'killed'}): ${(stderr || stdout).trim().slice(0, 300)}`,
      { hint: `run: echo ${serverUrl} | ${bin} get` },
    );
  }
  if (stdout.trim() === '') return undefined;
  const out = parseWith(
    HelperOutputSchema,
    parseJson(stdout, `${bin} get`),
    `${bin} get`,
    'CREDENTIALS_INVALID',
  );
  const username = out.Username ?? '';
  const secret = out.Secret ?? '';
  if (secret === '' && username === '') return undefined;
  const source = `credential helper ${bin}`;
  if (username === '<token>') return { identityToken: secret, source };
  return { username, password: secret, source };
}

export interface KeychainOptions extends CredentialHelperOptions {
  /** Read CNB_REGISTRY_AUTH, DOCKER_CONFIG and HOME from here (default process.env). */
  env?: NodeJS.ProcessEnv;
}

/**
 * The credential for `registry`, looked up in order:
 *   1. CNB_REGISTRY_AUTH (an entry for this registry wins over everything else);
 *   2. each containers-auth.json file (containersAuthPaths: what `podman login` and `packfarm login` write),
 *      then the docker config; in each file: `credHelpers[registry]`, then an `auths` entry holding a
 *      credential (an exact key first, then any key normalizing to the same host: `https://host/v1/` matches
 *      `host`; Docker Hub is `https://index.docker.io/v1/`), then `credsStore`, the default helper.
 *      Keys naming a namespace (`host/team`) are skipped: a credential here is per registry.
 * The first file with a credential for the registry wins; undefined means anonymous.
 */
export async function resolveCredential(
  registry: string,
  opts: KeychainOptions = {},
): Promise<Credential | undefined> {
  const env = opts.env ?? process.env;
  const want = normalizeRegistryKey(registry);
  if (env.CNB_REGISTRY_AUTH && env.CNB_REGISTRY_AUTH.trim() !== '') {
    const fromEnv = parseCnbRegistryAuth(env.CNB_REGISTRY_AUTH).get(want);
    if (fromEnv) return fromEnv;
  }
  for (const path of credentialFiles(env)) {
    const config = await readDockerConfig(path);
    if (!config) continue;
    const cred = await credentialFromConfig(config, path, registry, { env, timeoutMs: opts.timeoutMs });
    if (cred) return cred;
  }
  return undefined;
}

/** Whether a config key names a namespace (`host/team/app`) rather than a registry. */
function namesNamespace(key: string): boolean {
  const rest = key.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '');
  const slash = rest.indexOf('/');
  return slash >= 0 && rest.slice(slash + 1).replace(/^v[12]\/?$/, '') !== '';
}

async function credentialFromConfig(
  config: DockerConfig,
  path: string,
  registry: string,
  opts: { env: NodeJS.ProcessEnv; timeoutMs: number | undefined },
): Promise<Credential | undefined> {
  const want = normalizeRegistryKey(registry);
  const helperOpts = {
    env: opts.env,
    ...(opts.timeoutMs !== undefined ? { timeoutMs: opts.timeoutMs } : {}),
  };
  const serverUrl = helperServerUrl(registry);

  const helpers = config.credHelpers ?? {};
  const helper =
    helpers[registry] ??
    Object.entries(helpers).find(([k]) => !namesNamespace(k) && normalizeRegistryKey(k) === want)?.[1];
  if (helper) return runCredentialHelper(helper, serverUrl, helperOpts);

  const auths = config.auths ?? {};
  const exactKeys = want === 'docker.io' ? [DOCKER_HUB_AUTH_KEY, registry] : [registry];
  const keys = [
    ...exactKeys.filter((k) => k in auths),
    ...Object.keys(auths).filter(
      (k) => !exactKeys.includes(k) && !namesNamespace(k) && normalizeRegistryKey(k) === want,
    ),
  ];
  for (const key of keys) {
    const cred = credentialFromAuthEntry(auths[key]!, `${path} auths[${JSON.stringify(key)}]`);
    if (cred) return cred;
  }

  if (config.credsStore) return runCredentialHelper(config.credsStore, serverUrl, helperOpts);
  return undefined;
}

/** A resolver over `resolveCredential` that asks each registry once (helpers can be slow or prompt). */
export function createKeychain(opts: KeychainOptions = {}): CredentialResolver {
  const cache = new Map<string, Promise<Credential | undefined>>();
  return (registry) => {
    const key = normalizeRegistryKey(registry);
    let p = cache.get(key);
    if (!p) {
      p = resolveCredential(registry, opts);
      cache.set(key, p);
      p.catch(() => cache.delete(key));
    }
    return p;
  };
}

/** A resolver that hands out one fixed credential for every registry (or nothing, for anonymous). */
export function staticCredentials(cred: Credential | undefined): CredentialResolver {
  return async () => cred;
}
