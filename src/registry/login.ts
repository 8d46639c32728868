import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { parseJson, parseWith } from '../util/validate.js';
import { RegistryClient } from './client.js';
import { normalizeRegistryKey, primaryAuthFile } from './credentials.js';

/**
 * `packfarm login` / `logout`: the containers-auth.json file podman, skopeo and buildah use (by default
 * `primaryAuthFile()`), so a login with either tool serves both. Entries are `auths["host[:port]"].auth`,
 * base64 of `user:password`; every other key and entry in the file is kept as it was. The file is replaced
 * atomically (temp file beside it, then rename) with mode 0600: it holds passwords.
 */

const AuthFileSchema = z.looseObject({
  auths: z.record(z.string(), z.looseObject({})).optional(),
});
type AuthFile = z.infer<typeof AuthFileSchema>;

async function readAuthFile(path: string): Promise<AuthFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return {};
    throw new PackfarmError('CREDENTIALS_UNREADABLE', `${path}: cannot read: ${(err as Error).message}`, {
      cause: err,
    });
  }
  if (text.trim() === '') return {};
  return parseWith(AuthFileSchema, parseJson(text, path), path, 'CREDENTIALS_INVALID');
}

/** The key an entry is stored under: host[:port] as in references, `docker.io` for Docker Hub (as podman). */
export function loginKey(registry: string): string {
  const key = normalizeRegistryKey(registry);
  if (key === '' || /[/\s]/.test(key))
    throw new PackfarmError('INVALID_ARGS', `"${registry}" is not a registry host[:port]`, {
      hint: 'give the registry alone, e.g. packfarm login registry.example:5000',
    });
  return key;
}

export interface LoginOptions {
  username: string;
  password: string;
  /** The file to write (default primaryAuthFile(env)). */
  authFile?: string;
  insecureRegistries?: readonly string[];
  env?: NodeJS.ProcessEnv;
  /** Store without asking the registry first (podman's --verify=false has no equivalent; tests, offline). */
  verify?: boolean;
}

/**
 * Check the credentials against the registry (an authenticated GET /v2/, with a token for Bearer
 * registries), then store them. Nothing is written when the registry refuses them.
 */
export async function login(
  registry: string,
  opts: LoginOptions,
): Promise<{ authFile: string; key: string }> {
  const key = loginKey(registry);
  if (opts.username === '' || opts.username.includes(':'))
    throw new PackfarmError('INVALID_ARGS', 'the username must not be empty nor contain ":"');
  const authFile = opts.authFile ?? primaryAuthFile(opts.env);
  if (opts.verify !== false) {
    const client = new RegistryClient({
      registry: key,
      credentials: { username: opts.username, password: opts.password, source: `login for ${key}` },
      ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    });
    try {
      await client.request({ method: 'GET', path: '/v2/', scopes: [], what: 'ping', accept: [200] });
    } finally {
      await client.close();
    }
  }
  const doc = await readAuthFile(authFile);
  const auth = Buffer.from(`${opts.username}:${opts.password}`).toString('base64');
  const next = { ...doc, auths: { ...doc.auths, [key]: { auth } } };
  await writeFileAtomic(authFile, `${JSON.stringify(next, null, '\t')}\n`, 0o600);
  return { authFile, key };
}

/** Remove the registry's entry; false when there was none. */
export async function logout(
  registry: string,
  opts: { authFile?: string; env?: NodeJS.ProcessEnv } = {},
): Promise<{ authFile: string; key: string; removed: boolean }> {
  const key = loginKey(registry);
  const authFile = opts.authFile ?? primaryAuthFile(opts.env);
  const doc = await readAuthFile(authFile);
  const auths = { ...doc.auths };
  const keys = Object.keys(auths).filter((k) => k === key || normalizeRegistryKey(k) === key);
  if (keys.length === 0) return { authFile, key, removed: false };
  for (const k of keys) delete auths[k];
  await writeFileAtomic(authFile, `${JSON.stringify({ ...doc, auths }, null, '\t')}\n`, 0o600);
  return { authFile, key, removed: true };
}
