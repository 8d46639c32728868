import type { ImageStore } from '../image/store.js';
import type { Platform } from '../oci/platform.js';
import { type OciExecutor, type OciExecutorOptions, createOciExecutor } from './oci.js';
import { type BuildRootfs, prepareRootfs } from './rootfs.js';

export interface BuildImageExecutorOptions
  extends Omit<OciExecutorOptions, 'rootfs' | 'uid' | 'gid' | 'env' | 'platform'> {
  /** Where the build image is, and which one: a manifest digest, or an index (tag/digest) with `platform`. */
  store: ImageStore;
  image: string;
  platform: Platform;
  /** Where root filesystems are kept (default: packfarm's data dir). */
  dataDir?: string;
  signal?: AbortSignal;
}

/**
 * The oci executor of one target in one call: the build image's root filesystem (unpacked once per digest),
 * run as its CNB user with its Env. This is what a target job needs; the rootfs it used is reported with it.
 */
export async function createBuildImageExecutor(
  opts: BuildImageExecutorOptions,
): Promise<OciExecutor & { rootfs: BuildRootfs }> {
  const { store, image, dataDir, signal, ...rest } = opts;
  const rootfs = await prepareRootfs({
    store,
    image,
    platform: opts.platform,
    ...(dataDir ? { dataDir } : {}),
    ...(signal ? { signal } : {}),
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
