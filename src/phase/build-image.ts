import { ensureDataDir } from '../image/data-dir.js';
import { withFileLock } from '../util/lock.js';
import { readBaseImage } from '../image/read.js';
import type { ImageStore } from '../image/store.js';
import { isDigest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import { type OciExecutor, type OciExecutorOptions, createOciExecutor } from '../exec/oci.js';
import { type BuildRootfs, findRootfs, unpackRootfs } from '../exec/rootfs.js';

/**
 * The build environment of one target: the build image's root filesystem, read from an image store and
 * unpacked once per manifest digest (exec/rootfs.ts), and the oci executor that runs buildpacks in it.
 */

export interface BuildImageRootfsOptions {
  /** Where the build image is: a manifest digest, or a tag/digest of an index together with `platform`. */
  store: ImageStore;
  image: string;
  platform?: Platform;
  /** Default: packfarm's data dir (PACKFARM_HOME, XDG_DATA_HOME/packfarm, ~/.local/share/packfarm). */
  dataDir?: string;
  signal?: AbortSignal;
  onLayer?: (info: { digest: string; index: number; count: number }) => void;
}

// Unpacking a large image can take minutes; a crashed owner on this host is detected by its pid instead.
const UNPACK_LOCK = { timeoutMs: 30 * 60_000, staleMs: 6 * 60 * 60_000 };

/** The build image's root filesystem for one target: unpacked on first use, reused (without the store) after. */
export async function prepareBuildImageRootfs(opts: BuildImageRootfsOptions): Promise<BuildRootfs> {
  const dataDir = opts.dataDir ?? (await ensureDataDir());
  if (isDigest(opts.image)) {
    const ready = await findRootfs(dataDir, opts.image);
    if (ready) return ready;
  }
  const base = await readBaseImage(opts.store, opts.image, opts.platform);
  return unpackRootfs(
    {
      description: `${opts.store.description}@${base.digest}`,
      digest: base.digest,
      configBytes: base.configBytes,
      layers: base.manifest.layers.map((l) => ({
        digest: l.digest,
        open: () => opts.store.getBlob(l.digest),
      })),
    },
    {
      dataDir,
      lock: (path, fn) => withFileLock(path, fn, UNPACK_LOCK),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onLayer ? { onLayer: opts.onLayer } : {}),
    },
  );
}

export interface BuildImageExecutorOptions
  extends BuildImageRootfsOptions,
    Omit<OciExecutorOptions, 'rootfs' | 'uid' | 'gid' | 'env' | 'platform'> {
  platform: Platform;
}

/**
 * The oci executor of one target in one call: the build image's root filesystem, run as its CNB user with its
 * Env. The rootfs it used is reported with it. Call `close()` when the target is done.
 */
export async function createBuildImageExecutor(
  opts: BuildImageExecutorOptions,
): Promise<OciExecutor & { rootfs: BuildRootfs }> {
  const { store, image, dataDir, signal, onLayer, ...rest } = opts;
  const rootfs = await prepareBuildImageRootfs({
    store,
    image,
    platform: opts.platform,
    ...(dataDir ? { dataDir } : {}),
    ...(signal ? { signal } : {}),
    ...(onLayer ? { onLayer } : {}),
  });
  const exec = await createOciExecutor({
    ...rest,
    rootfs: rootfs.dir,
    uid: rootfs.config.uid,
    gid: rootfs.config.gid,
    env: rootfs.config.env,
    platform: rootfs.platform,
  });
  return Object.assign(exec, { rootfs });
}
