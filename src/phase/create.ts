import { join } from 'node:path';
import type { BuildpackStore, Order } from '../buildpack/descriptor.js';
import type { PlatformOrder } from '../platform/order.js';
import { type CacheLocation, openCache } from '../cache/open.js';
import { exportCache, type ExportCacheResult } from './cache.js';
import type { Executor } from '../exec/executor.js';
import type { ImageStore } from '../image/store.js';
import type { Platform } from '../oci/platform.js';
import type { ProjectMetadata } from '../platform/labels.js';
import { type Logger, silentLogger } from '../util/log.js';
import { type AnalyzeResult, analyzeToFile } from './analyze.js';
import { type BuildEvent, type BuildResult, build } from './build.js';
import { type DetectEvent, type DetectResult, detect } from './detect.js';
import {
  type ExportEvent,
  type ExportOutput,
  type ExportResult,
  exportImage,
  knownCacheDiffIds,
} from './export.js';
import type { HostPaths } from './host-paths.js';
import type { LayerTracker } from './layer-state.js';
import { type RestoreResult, restore } from './restore.js';

/**
 * The creator (platform.md "creator"): analyze → detect → restore → build → export, then the cache, in one
 * process over one set of directories. Each phase is the same function the single-phase commands run; the
 * creator only passes results along in memory instead of through files (it still writes analyzed.toml,
 * group.toml and plan.toml into the layers dir, as the reference creator does, for inspection and debugging).
 */
export interface CreateOptions {
  appDir: string;
  layersDir: string;
  platformDir: string;
  /** Where the group's buildpacks are looked up. */
  buildpacks: BuildpackStore;
  order: Order | PlatformOrder;
  /** The run image to build on (a tag or digest in its store), with the name recorded in labels. */
  runImage: { store: ImageStore; target: string; name?: string; mirrors?: string[] };
  outputs: ExportOutput[];
  /** The previous build (usually the first output's tag); a missing image is fine. */
  previousImage?: { store: ImageStore; target: string } | undefined;
  cache?: CacheLocation | undefined;
  /** Start from an empty cache (the next export writes a fresh one). */
  clearCache?: boolean;
  /** `-skip-restore`: restore nothing (no previous-image metadata, no cache contents). */
  skipRestore?: boolean;
  /** Target platform: selects the child of a run-image index, the cache and the image's platform. */
  platform: Platform;
  platformApi: string;
  createdAt?: Date | undefined;
  defaultProcess?: string | undefined;
  projectMetadata?: ProjectMetadata | undefined;
  reportPath?: string;
  /**
   * The app and layers dirs as the buildpacks saw them, when that differs from where the image holds them
   * (the host executor runs buildpacks in temp dirs; the image has /workspace and /layers). Process commands,
   * args, working dirs and launch env values that name them are rewritten to the image paths. Ignored when
   * the executor reports its own mount paths (the oci executor's /workspace and /layers).
   */
  hostPaths?: HostPaths;
  imageAppDir?: string;
  imageLayersDir?: string;
  uid?: number;
  gid?: number;
  execEnv?: string;
  /** `<build-config>`: operator env (`env/`) applied to every buildpack. */
  buildConfigDir?: string | undefined;
  executor?: Executor;
  /**
   * The reused build dir's layer records (phase/layer-state.ts): restore keeps unchanged layer dirs, export and
   * cache trust their recorded diffIDs, and a successful build writes the new records to `path`.
   */
  layerState?: { tracker: LayerTracker; path: string };
  hostEnv?: Readonly<Record<string, string | undefined>>;
  logger?: Logger;
  onEvent?: (e: CreateEvent) => void;
  signal?: AbortSignal;
}

export type CreatePhase = 'analyze' | 'detect' | 'restore' | 'build' | 'export' | 'cache';

/** The reference creator's phase headers (platforms show them); the cache is saved within EXPORTING. */
/** The reference creator's phase headers (`===> DETECTING`), for the lifecycle commands to print. */
export const PHASE_HEADER: Record<CreatePhase, string | undefined> = {
  analyze: 'ANALYZING',
  detect: 'DETECTING',
  restore: 'RESTORING',
  build: 'BUILDING',
  export: 'EXPORTING',
  cache: undefined,
};

export type CreateEvent =
  | { type: 'phase-start'; phase: CreatePhase }
  | { type: 'phase-end'; phase: CreatePhase; durationMs: number }
  | { type: 'detect'; event: DetectEvent }
  | { type: 'build'; event: BuildEvent }
  | { type: 'export'; event: ExportEvent };

export interface CreateResult {
  analyzed: AnalyzeResult;
  detected: DetectResult;
  restored: RestoreResult;
  built: BuildResult;
  exported: ExportResult;
  cache: ExportCacheResult | undefined;
  /** Wall time per phase, in milliseconds. */
  timings: Record<CreatePhase, number>;
  /** Time spent inside buildpacks' bin/build (the rest of `build` is lifecycle overhead). */
  buildpackMs: number;
}

export async function create(opts: CreateOptions): Promise<CreateResult> {
  const log = opts.logger ?? silentLogger;
  const timings: Record<CreatePhase, number> = {
    analyze: 0,
    detect: 0,
    restore: 0,
    build: 0,
    export: 0,
    cache: 0,
  };
  const phase = async <T>(name: CreatePhase, fn: () => Promise<T>): Promise<T> => {
    opts.onEvent?.({ type: 'phase-start', phase: name });
    const t0 = performance.now();
    try {
      return await fn();
    } finally {
      timings[name] = performance.now() - t0;
      opts.onEvent?.({ type: 'phase-end', phase: name, durationMs: timings[name] });
    }
  };
  // Where buildpacks saw the app and layers dirs: an executor that mounts them says so itself.
  const hostPaths: HostPaths | undefined = opts.executor?.paths
    ? { appDir: opts.executor.paths.app, layersDir: opts.executor.paths.layers }
    : opts.hostPaths;
  const runner = buildpackRunner(opts, log);

  const analyzed = await phase('analyze', () => runAnalyze(opts, log));
  const detected = await phase('detect', () => runDetect(opts, analyzed, runner));
  const group = { group: detected.group };
  // The cache is opened once: the restorer reads it, and the cache export reuses what it already holds.
  const cache = opts.cache
    ? await openCache(opts.cache, opts.platform, {
        logger: log,
        ...(opts.clearCache ? { clear: true } : {}),
        ...(opts.createdAt ? { creationTime: opts.createdAt } : {}),
      })
    : undefined;
  const restored = await phase('restore', () => runRestore(opts, analyzed, detected, cache, log));
  const buildpackTime = { ms: 0 };
  const built = await phase('build', () => runBuild(opts, analyzed, detected, group, runner, buildpackTime));
  const exported = await phase('export', async () => runExport(opts, analyzed, group, hostPaths, log));
  const cacheResult = opts.cache
    ? await phase('cache', () =>
        runCacheExport(opts, opts.cache as CacheLocation, detected, cache, exported, log),
      )
    : undefined;
  if (opts.layerState) {
    const n = await opts.layerState.tracker.save(opts.layerState.path);
    log.debug(`recorded ${n} layer dir(s) for the next build in ${opts.layerState.path}`);
  }

  return {
    analyzed,
    detected,
    restored,
    built,
    exported,
    cache: cacheResult,
    timings,
    buildpackMs: buildpackTime.ms,
  };
}

type OpenedCache = Awaited<ReturnType<typeof openCache>>;

function signalOf(opts: CreateOptions): { signal?: AbortSignal } {
  return opts.signal ? { signal: opts.signal } : {};
}

/** How detect and build run buildpacks: the same for both. */
function buildpackRunner(opts: CreateOptions, log: Logger) {
  return {
    platformApi: opts.platformApi,
    ...(opts.execEnv ? { execEnv: opts.execEnv } : {}),
    ...(opts.buildConfigDir ? { buildConfigDir: opts.buildConfigDir } : {}),
    ...(opts.executor ? { executor: opts.executor } : {}),
    ...(opts.hostEnv ? { hostEnv: opts.hostEnv } : {}),
    logger: log,
    ...signalOf(opts),
  };
}

function runAnalyze(opts: CreateOptions, log: Logger): Promise<AnalyzeResult> {
  return analyzeToFile({
    analyzedPath: join(opts.layersDir, 'analyzed.toml'),
    runImage: { store: opts.runImage.store, target: opts.runImage.target },
    ...(opts.previousImage && !opts.skipRestore ? { previousImage: opts.previousImage } : {}),
    platform: opts.platform,
    layersDir: opts.layersDir,
    ...(opts.imageLayersDir ? { imageLayersDir: opts.imageLayersDir } : {}),
    logger: log,
  });
}

function runDetect(
  opts: CreateOptions,
  analyzed: AnalyzeResult,
  runner: ReturnType<typeof buildpackRunner>,
): Promise<DetectResult> {
  return detect({
    appDir: opts.appDir,
    platformDir: opts.platformDir,
    store: opts.buildpacks,
    order: opts.order,
    target: analyzed.runImage.target,
    ...runner,
    groupPath: join(opts.layersDir, 'group.toml'),
    planPath: join(opts.layersDir, 'plan.toml'),
    onEvent: (event) => opts.onEvent?.({ type: 'detect', event }),
  });
}

function runRestore(
  opts: CreateOptions,
  analyzed: AnalyzeResult,
  detected: DetectResult,
  cache: OpenedCache | undefined,
  log: Logger,
): Promise<RestoreResult> {
  return restore({
    layersDir: opts.layersDir,
    group: detected.group,
    ...(analyzed.previousMetadata && !opts.skipRestore
      ? { previousMetadata: analyzed.previousMetadata }
      : {}),
    ...(cache && !opts.skipRestore ? { cache } : {}),
    platformApi: opts.platformApi,
    ...(opts.imageLayersDir ? { imageLayersDir: opts.imageLayersDir } : {}),
    // Restored layers go to the build user (applied only as root), as the reference restorer does.
    ...(opts.uid !== undefined && opts.gid !== undefined ? { uid: opts.uid, gid: opts.gid } : {}),
    ...(opts.layerState && opts.layerState.tracker.candidates.length > 0
      ? {
          keep: {
            candidates: opts.layerState.tracker.candidates,
            recorded: (key: string, dir: string) => opts.layerState!.tracker.recorded(key, dir),
          },
        }
      : {}),
    logger: log,
    ...signalOf(opts),
  });
}

/** The build phase; `buildpackTime.ms` adds up the time spent inside buildpacks' bin/build. */
function runBuild(
  opts: CreateOptions,
  analyzed: AnalyzeResult,
  detected: DetectResult,
  group: { group: DetectResult['group'] },
  runner: ReturnType<typeof buildpackRunner>,
  buildpackTime: { ms: number },
): Promise<BuildResult> {
  let started = 0;
  return build({
    appDir: opts.appDir,
    layersDir: opts.layersDir,
    platformDir: opts.platformDir,
    buildpackStore: opts.buildpacks,
    group,
    plan: detected.plan,
    analyzed: analyzed.analyzed,
    target: detected.target,
    ...runner,
    onEvent: (event) => {
      if (event.type === 'buildpack-start') started = performance.now();
      if (event.type === 'buildpack-end') buildpackTime.ms += performance.now() - started;
      opts.onEvent?.({ type: 'build', event });
    },
  });
}

function runExport(
  opts: CreateOptions,
  analyzed: AnalyzeResult,
  group: { group: DetectResult['group'] },
  hostPaths: HostPaths | undefined,
  log: Logger,
): Promise<ExportResult> {
  return exportImage({
    layersDir: opts.layersDir,
    appDir: opts.appDir,
    group,
    analyzed: analyzed.analyzed,
    ...(hostPaths ? { hostPaths } : {}),
    runImage: {
      store: opts.runImage.store,
      target: analyzed.runImage.digest,
      ...(opts.runImage.name ? { name: opts.runImage.name } : {}),
      ...(opts.runImage.mirrors ? { mirrors: opts.runImage.mirrors } : {}),
    },
    platform: opts.platform,
    outputs: opts.outputs,
    platformApi: opts.platformApi,
    ...(opts.createdAt ? { createdAt: opts.createdAt } : {}),
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    defaultProcess: opts.defaultProcess,
    ...(opts.projectMetadata ? { projectMetadata: opts.projectMetadata } : {}),
    ...(opts.previousImage ? { previousImage: opts.previousImage } : {}),
    ...(opts.imageAppDir ? { imageAppDir: opts.imageAppDir } : {}),
    ...(opts.imageLayersDir ? { imageLayersDir: opts.imageLayersDir } : {}),
    ...(opts.reportPath ? { reportPath: opts.reportPath } : {}),
    ...(opts.layerState ? { layerTracker: opts.layerState.tracker } : {}),
    logger: log,
    onEvent: (event) => opts.onEvent?.({ type: 'export', event }),
    ...signalOf(opts),
  });
}

function runCacheExport(
  opts: CreateOptions,
  location: CacheLocation,
  detected: DetectResult,
  cache: OpenedCache | undefined,
  exported: ExportResult,
  log: Logger,
): Promise<ExportCacheResult> {
  return exportCache({
    location,
    layersDir: opts.layersDir,
    group: detected.group,
    target: opts.platform,
    ...(opts.createdAt ? { creationTime: opts.createdAt } : {}),
    ...(opts.uid !== undefined ? { uid: opts.uid } : {}),
    ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
    ...(cache ? { previous: cache } : {}),
    knownDiffIds: knownCacheDiffIds(exported),
    ...(opts.imageLayersDir ? { imageLayersDir: opts.imageLayersDir } : {}),
    ...(opts.layerState ? { layerTracker: opts.layerState.tracker } : {}),
    logger: log,
    ...signalOf(opts),
  });
}
