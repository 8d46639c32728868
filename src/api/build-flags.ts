import { isAbsolute, join, posix, resolve } from 'node:path';
import { z } from 'zod';
import {
  type ImageLocation,
  appImageLocation,
  formatImageLocation,
  openImage,
  parseImageLocation,
} from '../image/transport.js';
import { PackfarmError } from '../util/errors.js';

/**
 * pack's `build` flags that packfarm maps onto its own model: `--cache` specs, `--volume`, `--network`,
 * `--pull-policy`. Each parser names the flag and the value it refused.
 */

// ---- --cache 'type=build;format=image|volume|bind;name=…|source=…' -------------------------------------------

/** What a `--cache` spec selects: one of the build cache options. */
export type CacheSpec = { cacheImage: string } | { cacheDir: string };

/**
 * pack's `--cache` syntax. `type=build` (the default) with `format=image;name=REF` → a cache image,
 * `format=bind;source=DIR` → a cache directory, `format=volume[;name=NAME]` → a named cache directory under
 * `<data dir>/cache/volume-<NAME>` (packfarm has no volumes; a directory is what a volume is here).
 * `type=launch` has no packfarm equivalent (launch layers are reused from the previous image) and is refused.
 */
export function parseCacheSpec(text: string, dataDir: string, cwd = process.cwd()): CacheSpec {
  const bad = (
    why: string,
    hint = "e.g. --cache 'type=build;format=image;name=registry.example/app-cache'",
  ) => new PackfarmError('INVALID_ARGS', `--cache ${JSON.stringify(text)}: ${why}`, { hint });
  const fields = new Map<string, string>();
  for (const part of text.split(';')) {
    if (part.trim() === '') continue;
    const eq = part.indexOf('=');
    if (eq <= 0) throw bad(`"${part}" is not key=value`);
    const key = part.slice(0, eq).trim();
    if (!['type', 'format', 'name', 'source'].includes(key))
      throw bad(`unknown key "${key}" (known: type, format, name, source)`);
    if (fields.has(key)) throw bad(`"${key}" is given twice`);
    fields.set(key, part.slice(eq + 1).trim());
  }
  const type = fields.get('type') ?? 'build';
  if (type === 'launch')
    throw bad(
      'type=launch is not supported: packfarm reuses launch layers from the previous image',
      'drop the --cache type=launch flag; use type=build for the build cache',
    );
  if (type !== 'build') throw bad(`type must be build or launch, not "${type}"`);
  const format = fields.get('format') ?? 'volume';
  const name = fields.get('name');
  const source = fields.get('source');
  switch (format) {
    case 'image':
      if (!name) throw bad('format=image needs name=REF');
      return { cacheImage: name };
    case 'bind':
      if (!source) throw bad('format=bind needs source=DIR');
      return { cacheDir: resolve(cwd, source) };
    case 'volume': {
      const volume = name ?? 'default';
      if (!/^[A-Za-z0-9][A-Za-z0-9_.-]*$/.test(volume))
        throw bad(`volume name "${volume}" may hold only letters, digits, '_', '.' and '-'`);
      return { cacheDir: join(dataDir, 'cache', `volume-${volume}`) };
    }
    default:
      throw bad(`format must be image, bind or volume, not "${format}"`);
  }
}

// ---- --volume host:target[:ro|rw] -----------------------------------------------------------------------------

export const VolumeSchema = z.object({
  /** Absolute path on this machine. */
  host: z.string().min(1),
  /** Absolute path where the buildpacks see it. */
  target: z.string().min(1),
  readOnly: z.boolean().default(true),
});
export type Volume = z.output<typeof VolumeSchema>;

/** Paths the lifecycle owns: mounting over them would hide the buildpacks, app or layers (pack refuses too). */
const RESERVED_TARGETS = ['/cnb', '/layers', '/workspace', '/platform'];

/**
 * `--volume HOST:TARGET[:ro|rw]` (pack's form; read-only unless `rw`, as pack defaults). HOST is resolved
 * against the current directory; TARGET must be absolute and not one of the lifecycle's directories.
 */
export function parseVolume(text: string, cwd = process.cwd()): Volume {
  const bad = (why: string) =>
    new PackfarmError('INVALID_ARGS', `--volume ${JSON.stringify(text)}: ${why}`, {
      hint: 'give HOST_PATH:TARGET_PATH[:ro|rw], e.g. --volume ./certs:/etc/certs:ro',
    });
  const parts = text.split(':');
  if (parts.length < 2 || parts.length > 3) throw bad('expected HOST:TARGET[:MODE]');
  const [host, target, mode] = parts as [string, string, string | undefined];
  if (host === '' || target === '') throw bad('HOST and TARGET must not be empty');
  if (mode !== undefined && mode !== 'ro' && mode !== 'rw') throw bad(`mode must be ro or rw, not "${mode}"`);
  if (!target.startsWith('/')) throw bad(`TARGET ${target} must be an absolute path`);
  const t = posix.normalize(target).replace(/\/+$/, '') || '/';
  const reserved = RESERVED_TARGETS.find((r) => t === '/' || t === r || t.startsWith(`${r}/`));
  if (reserved)
    throw bad(`mounting over ${t} is not allowed: the lifecycle owns ${t === '/' ? '/' : reserved}`);
  return { host: isAbsolute(host) ? host : resolve(cwd, host), target: t, readOnly: mode !== 'rw' };
}

// ---- --network -------------------------------------------------------------------------------------------------

/**
 * The network the buildpacks' processes get: `host` (this machine's network) or `none` (no network). packfarm
 * has no container networks to name, so other values are refused.
 */
export const NetworkSchema = z.enum(['host', 'none']);
export type Network = z.output<typeof NetworkSchema>;

export function parseNetwork(text: string): Network {
  const r = NetworkSchema.safeParse(text);
  if (!r.success)
    throw new PackfarmError(
      'INVALID_ARGS',
      `--network ${JSON.stringify(text)}: packfarm has no named networks`,
      {
        hint: "--network host (the build machine's network) or --network none (no network for the buildpacks)",
      },
    );
  return r.data;
}

// ---- --pull-policy ---------------------------------------------------------------------------------------------

export const PullPolicySchema = z.enum(['always', 'if-not-present', 'never']);
export type PullPolicy = z.output<typeof PullPolicySchema>;

/**
 * Where a builder or run image named by a registry reference is read from, under a pull policy. packfarm's
 * "local images" are the default local layout (`<data dir>/images/…`, where a build without --publish writes
 * and `packfarm image copy REF oci:…` can put a copy):
 *   always          the registry (the default; registry images are read in place, layers only as needed);
 *   if-not-present  the local layout when it holds the tag, else the registry;
 *   never           the local layout only; absent is an error naming the image and where it was looked for.
 * `oci:` names are always used as written. Returns the location as text (what openImage and resolveBuilder
 * take).
 */
export async function pulledImageName(
  name: string,
  policy: PullPolicy,
  what: string,
  env: NodeJS.ProcessEnv,
): Promise<string> {
  if (policy === 'always') return name;
  const loc = parseImageLocation(name, what);
  if (loc.transport === 'oci') return name;
  const local = appImageLocation(name, { publish: false, env, source: what });
  const present = await hasLocalImage(local);
  if (present) return formatImageLocation(local);
  if (policy === 'never')
    throw new PackfarmError(
      'IMAGE_NOT_FOUND',
      `${what} ${name}: not in the local layout ${formatImageLocation(local)}, and --pull-policy never forbids the registry`,
      {
        hint: `copy it there first: packfarm image copy ${name} ${formatImageLocation(local)}; or use --pull-policy if-not-present`,
      },
    );
  return name;
}

async function hasLocalImage(loc: ImageLocation): Promise<boolean> {
  try {
    const o = await openImage(loc);
    return (await o.store.resolve(o.target)) !== undefined;
  } catch {
    return false;
  }
}
