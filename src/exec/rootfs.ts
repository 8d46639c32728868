import { randomBytes } from 'node:crypto';
import { lstat, mkdir, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLayer } from '../archive/extract.js';
import { type Digest, digestAlgorithm, digestHex } from '../oci/digest.js';
import { type Platform, platformFromSpec } from '../oci/platform.js';
import { type ImageConfig, ImageConfigSchema } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';

/**
 * A build image's root filesystem, unpacked once per manifest digest under `<data dir>/rootfs/` and shared by
 * every later build of that image (this room is handed the layers; phase/build-image.ts reads them from a
 * store): `<data dir>/rootfs/sha256-<hex>/rootfs/` holds the tree and `config.json`
 * beside it the image config, exactly as stored. An unpack goes to a temp dir and is renamed into place, so a
 * present dir is always complete; a lock file keeps two processes from unpacking the same image at once.
 *
 * The tree is never written by builds: containers mount it read-only. The mount points the OCI executor needs
 * (/workspace, /layers, /platform, /cnb/buildpacks, /cnb/scratch, /tmp …) are created while unpacking, so the
 * runtime never has to create anything in it.
 */

/** Directories the OCI executor mounts over; created in every unpacked root filesystem. */
export const CONTAINER_MOUNT_DIRS = [
  'workspace',
  'layers',
  'platform',
  'cnb/buildpacks',
  'cnb/scratch',
  'tmp',
  'proc',
  'dev',
  'sys',
] as const;
/** Files the executor may bind from the host (name resolution when the network is on). */
export const CONTAINER_MOUNT_FILES = ['etc/resolv.conf', 'etc/hosts'] as const;

export interface BuildImageConfig {
  /**
   * The environment the build image declares (`Env`), with `HOME` from /etc/passwd for the build user and a
   * default `PATH` added when the image leaves them out (a container runtime would do the same).
   */
  env: Record<string, string>;
  /** `User` of the image config, as written. */
  user: string | undefined;
  /** The CNB build user: `CNB_USER_ID` / `CNB_GROUP_ID` from Env, else the config's `User`. */
  uid: number;
  gid: number;
  labels: Record<string, string>;
}

export interface BuildRootfs {
  /** The root filesystem (host path). */
  dir: string;
  /** The image manifest it was unpacked from. */
  digest: Digest;
  platform: Platform;
  config: BuildImageConfig;
  /** False when an earlier build had already unpacked it. */
  unpacked: boolean;
}

/**
 * A build image as handed to this room: its manifest digest, its config exactly as stored, and a way to open
 * each layer blob in order. Whoever knows image stores builds it (phase/build-image.ts).
 */
export interface BuildImageSource {
  /** For messages, e.g. `registry.example/builder@sha256:…`. */
  description: string;
  /** The image manifest's digest: the cache key. */
  digest: Digest;
  configBytes: Buffer;
  layers: ReadonlyArray<{ digest: Digest; open: () => Promise<NodeJS.ReadableStream> }>;
}

/**
 * An exclusive lock between processes around `fn` (image/lock.ts `withFileLock`, handed in by the caller).
 * It must tolerate being held for as long as an unpack takes.
 */
export type FileLock = <T>(lockPath: string, fn: () => Promise<T>) => Promise<T>;

export interface UnpackRootfsOptions {
  /** packfarm's data dir; root filesystems live in `<dataDir>/rootfs/`. */
  dataDir: string;
  lock: FileLock;
  signal?: AbortSignal;
  /** Called per layer unpacked (for progress). */
  onLayer?: (info: { digest: Digest; index: number; count: number }) => void;
}

const DEFAULT_PATH = '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export function rootfsCacheDir(dataDir: string, digest: Digest): string {
  return join(dataDir, 'rootfs', `${digestAlgorithm(digest)}-${digestHex(digest)}`);
}

/** The root filesystem of the image manifest `digest` when an earlier build unpacked it; needs no store. */
export async function findRootfs(dataDir: string, digest: Digest): Promise<BuildRootfs | undefined> {
  return readUnpacked(rootfsCacheDir(dataDir, digest), digest);
}

/** Unpack `source` under the data dir, unless an earlier build (or a concurrent one, waited for) did. */
export async function unpackRootfs(
  source: BuildImageSource,
  opts: UnpackRootfsOptions,
): Promise<BuildRootfs> {
  const target = rootfsCacheDir(opts.dataDir, source.digest);
  await mkdir(join(opts.dataDir, 'rootfs'), { recursive: true });
  return opts.lock(`${target}.lock`, async () => {
    const ready = await readUnpacked(target, source.digest);
    if (ready) return ready;
    const tmp = `${target}.tmp-${process.pid}-${randomBytes(6).toString('hex')}`;
    try {
      const root = join(tmp, 'rootfs');
      const asRoot = process.getuid?.() === 0;
      const count = source.layers.length;
      for (const [index, layer] of source.layers.entries()) {
        opts.signal?.throwIfAborted();
        await extractLayer({
          source: await layer.open(),
          dest: root,
          // Ownership and device nodes are part of the image; both need root (rootless keeps the caller's).
          preserveOwner: asRoot,
          allowDevices: asRoot,
          parentSymlinks: 'within-root',
          name: `${source.description} layer ${index + 1}/${count} (${layer.digest})`,
          ...(opts.signal ? { signal: opts.signal } : {}),
        });
        opts.onLayer?.({ digest: layer.digest, index, count });
      }
      await makeMountPoints(root, source.description);
      await writeFile(join(tmp, 'config.json'), source.configBytes);
      await rename(tmp, target);
    } catch (err) {
      await rm(tmp, { recursive: true, force: true });
      throw err;
    }
    const done = await readUnpacked(target, source.digest);
    if (!done) throw new Error(`${target} vanished right after unpacking`);
    return { ...done, unpacked: true };
  });
}

async function readUnpacked(dir: string, digest: Digest): Promise<BuildRootfs | undefined> {
  const source = join(dir, 'config.json');
  let text: string;
  try {
    text = await readFile(source, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
  const config = parseWith(ImageConfigSchema, parseJson(text, source), source);
  const root = join(dir, 'rootfs');
  return {
    dir: root,
    digest,
    platform: platformFromSpec(config),
    config: await buildImageConfig(config, root, `build image ${digest}`),
    unpacked: false,
  };
}

async function makeMountPoints(root: string, what: string): Promise<void> {
  for (const d of CONTAINER_MOUNT_DIRS) {
    const path = join(root, d);
    const st = await lstat(path).catch(() => undefined);
    if (st && !st.isDirectory()) {
      throw new PackfarmError(
        'BUILD_IMAGE_INVALID',
        `${what}: /${d} is ${st.isSymbolicLink() ? 'a symlink' : 'a file'}, but buildpacks need a directory mounted there`,
        { hint: `remove /${d} from the build image` },
      );
    }
    if (!st) await mkdir(path, { recursive: true, mode: d === 'tmp' ? 0o1777 : 0o755 });
  }
  for (const f of CONTAINER_MOUNT_FILES) {
    const path = join(root, f);
    // A symlink (e.g. resolv.conf → /run/…) is left alone: the runtime resolves it inside the root.
    if (await lstat(path).catch(() => undefined)) continue;
    await mkdir(join(path, '..'), { recursive: true });
    await writeFile(path, '', { mode: 0o644 });
  }
}

/** Parse `K=V` Env entries (later entries win, as in a container runtime). */
export function envRecord(env: readonly string[] | null | undefined): Record<string, string> {
  const out: Record<string, string> = {};
  for (const e of env ?? []) {
    const eq = e.indexOf('=');
    if (eq > 0) out[e.slice(0, eq)] = e.slice(eq + 1);
  }
  return out;
}

/** The build user, env and labels of a build image (`root` is its unpacked tree, for /etc/passwd). */
export async function buildImageConfig(
  config: ImageConfig,
  root: string,
  what: string,
): Promise<BuildImageConfig> {
  const env = envRecord(config.config?.Env);
  const user = config.config?.User || undefined;
  const passwd = parsePasswd(await readImageFile(root, 'etc/passwd'));
  const group = parseGroup(await readImageFile(root, 'etc/group'));
  let uid = parseId(env.CNB_USER_ID, `${what}: Env CNB_USER_ID`);
  let gid = parseId(env.CNB_GROUP_ID, `${what}: Env CNB_GROUP_ID`);
  if ((uid === undefined || gid === undefined) && user) {
    const [u = '', g] = user.split(':');
    const pw = /^\d+$/.test(u) ? passwd.find((p) => p.uid === Number(u)) : passwd.find((p) => p.name === u);
    uid ??= /^\d+$/.test(u) ? Number(u) : pw?.uid;
    if (gid === undefined) {
      if (g === undefined) gid = pw?.gid;
      else gid = /^\d+$/.test(g) ? Number(g) : group.find((x) => x.name === g)?.gid;
    }
  }
  if (uid === undefined || gid === undefined || uid === 0) {
    throw new PackfarmError(
      'BUILD_IMAGE_NO_CNB_USER',
      `${what}: no non-root build user (Env has no CNB_USER_ID/CNB_GROUP_ID${user ? ` and User "${user}" ${uid === 0 ? 'is root' : 'cannot be resolved in /etc/passwd'}` : ' and User is not set'})`,
      {
        hint: 'a build image sets CNB_USER_ID and CNB_GROUP_ID in its Env (platform spec "Build image"), e.g. CNB_USER_ID=1000 CNB_GROUP_ID=1000',
      },
    );
  }
  if (env.HOME === undefined) env.HOME = passwd.find((p) => p.uid === uid)?.home || '/';
  if (env.PATH === undefined) env.PATH = DEFAULT_PATH;
  return { env, user, uid, gid, labels: { ...(config.config?.Labels ?? {}) } };
}

function parseId(v: string | undefined, source: string): number | undefined {
  if (v === undefined || v === '') return undefined;
  if (!/^\d+$/.test(v))
    throw new PackfarmError('BUILD_IMAGE_INVALID', `${source}: "${v}" is not a numeric id`, {
      hint: 'set it to a number, e.g. 1000',
    });
  return Number(v);
}

/** A regular file inside the root filesystem; a symlink is not followed (it could point at the host's). */
async function readImageFile(root: string, rel: string): Promise<string> {
  const path = join(root, rel);
  const st = await lstat(path).catch(() => undefined);
  if (!st?.isFile()) return '';
  return readFile(path, 'utf8');
}

interface PasswdEntry {
  name: string;
  uid: number;
  gid: number;
  home: string;
}

function parsePasswd(text: string): PasswdEntry[] {
  const out: PasswdEntry[] = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 7 || !/^\d+$/.test(f[2]!) || !/^\d+$/.test(f[3]!)) continue;
    out.push({ name: f[0]!, uid: Number(f[2]), gid: Number(f[3]), home: f[5]! });
  }
  return out;
}

function parseGroup(text: string): Array<{ name: string; gid: number }> {
  const out: Array<{ name: string; gid: number }> = [];
  for (const line of text.split('\n')) {
    const f = line.split(':');
    if (f.length < 3 || !/^\d+$/.test(f[2]!)) continue;
    out.push({ name: f[0]!, gid: Number(f[2]) });
  }
  return out;
}
