// The public TypeScript API of packfarm: what platform integrators import. Every function here takes a typed
// options object, reports progress through typed events or a Logger, and throws PackfarmError (with a stable
// `code` and, for lifecycle phases, the CNB exit code) for anything a user can fix.

export { PackfarmError, isPackfarmError } from './util/errors.js';
export { type Logger, type LogLevel, createLogger, silentLogger } from './util/log.js';

// OCI vocabulary
export * from './oci/index.js';

// Layers
export {
  extractLayer,
  type ExtractLayerOptions,
  type LayerResult,
  type WriteLayerOptions,
  writeLayer,
  writeLayerFromEntries,
} from './archive/index.js';

// Image stores, copy, indexes
export type { ImageStore, PutBlobInput, PutBlobResult, StoredManifest } from './image/store.js';
export { type LayoutStore, type OpenLayoutOptions, openLayoutStore } from './image/layout-store.js';
export { createRegistryStore, type RegistryOptions } from './image/registry-store.js';
export { type ImageLocation, type OpenedImage, openImage, parseImageLocation } from './image/transport.js';
export { type CopyEvent, type CopyOptions, type CopyReport, copyImage } from './image/copy.js';
export {
  type BuildIndexOptions,
  type BuiltIndex,
  buildIndex,
  type IndexChild,
  type IndexFormat,
} from './image/index-list.js';
export { type Inspection, inspectImage } from './image/inspect.js';

// Lifecycle phases
export { type DetectEvent, type DetectOptions, type DetectResult, detect } from './phase/detect.js';
export { type BuildEvent, type BuildOptions, type BuildResult, build } from './phase/build.js';
export { type AnalyzeOptions, type AnalyzeResult, analyze, analyzeToFile } from './phase/analyze.js';
export { type RestoreOptions, type RestoreResult, restore } from './phase/restore.js';
export { type ExportEvent, type ExportOptions, type ExportResult, exportImage } from './phase/export.js';
export {
  type RebaseImageRef,
  type RebaseOptions,
  type RebaseResult,
  type RebasedImage,
  rebase,
} from './phase/rebase.js';
export { type CacheLocation, openCache } from './cache/open.js';
export { type ExportCacheOptions, exportCache } from './phase/cache.js';
export {
  type AppImageDetails,
  type AppImageResult,
  type AppInspectReport,
  inspectApp,
  inspectAppImage,
} from './api/inspect.js';
export {
  type DownloadSbomOptions,
  type DownloadSbomResult,
  downloadAppSbom,
  downloadSbom,
} from './api/sbom.js';

// How buildpack processes run: on the host, or with runc inside the target's build image (qemu for other arches)
export {
  type BuildRootfs,
  createHostExecutor,
  createOciExecutor,
  detectPlatforms,
  type ExecDirs,
  type ExecResult,
  type ExecSpec,
  type Executor,
  howToRun,
  type MachinePlatforms,
  type OciExecutor,
  type OciExecutorOptions,
  setupEmulation,
} from './exec/index.js';
export {
  type BuildImageExecutorOptions,
  type BuildImageRootfsOptions,
  createBuildImageExecutor,
  prepareBuildImageRootfs,
} from './phase/build-image.js';
export { type NodeInfo, nodeInfo } from './exec/index.js';

// Where a build's buildpacks come from: --buildpack DIR|ARCHIVE and --builder DIR|REF
export { type StagedBuildpack, layeredBuildpackStore, stageBuildpack } from './buildpack/source.js';
export { type ResolveBuilderOptions, type ResolvedBuilder, resolveBuilder } from './builder/resolve.js';
export { type BuilderToml, parseBuilderToml, readBuilderToml } from './builder/builder-toml.js';

// `packfarm build` as a function: one platform, buildpacks on the host executor.
export { type BuildAppHooks, type BuildAppOptions, type BuildReport, buildApp } from './api/build.js';
export {
  type CreateEvent,
  type CreateOptions,
  type CreatePhase,
  type CreateResult,
  create,
} from './phase/create.js';
