export type { ExecDirs, ExecResult, ExecSpec, Executor } from './executor.js';
export { createHostExecutor, type HostExecutorOptions } from './host.js';
export { HOST_ENV_ALLOWLIST, pickHostEnv } from './env.js';
export {
  CONTAINER_PATHS,
  DEFAULT_RUNTIME,
  type OciExecutor,
  type OciExecutorOptions,
  createOciExecutor,
} from './oci.js';
export {
  type BuildImageConfig,
  type BuildImageSource,
  type BuildRootfs,
  type FileLock,
  findRootfs,
  rootfsCacheDir,
  unpackRootfs,
} from './rootfs.js';
export {
  type BinfmtEntry,
  type EmulatedPlatform,
  type MachinePlatforms,
  detectPlatforms,
  elfPlatformOf,
  howToRun,
  parseBinfmtEntry,
  readBinfmt,
  runnablePlatforms,
} from './binfmt.js';
export { type SetupEmulationOptions, type SetupEmulationResult, setupEmulation } from './emulation.js';
export { handOver, hostToInside, toExecutorView } from './view.js';
export { type NodeInfo, nodeInfo, runtimeVersion } from './node-info.js';
