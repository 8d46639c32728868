import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { Transform } from 'node:stream';
import type { CacheLocation } from '../cache/open.js';
import type { Executor } from '../exec/executor.js';
import { createHostExecutor } from '../exec/host.js';
import type { Logger } from '../util/log.js';
import { packfarmDataDir } from '../image/data-dir.js';
import type { ImageStore } from '../image/store.js';
import { formatImageLocation } from '../image/transport.js';
import type { Digest } from '../oci/digest.js';
import { ImageManifestSchema } from '../oci/schemas.js';
import { syncAppDir } from '../platform/app-files.js';
import { writePlatformEnv } from '../platform/env-files.js';
import type { ProjectMetadata } from '../platform/labels.js';
import { createBuildImageExecutor } from '../phase/build-image.js';
import { type CreateEvent, type CreatePhase, type CreateResult, create } from '../phase/create.js';
import type { ExportOutput, LayerOutcome } from '../phase/export.js';
import { parseJson, parseWith } from '../util/validate.js';
import { copyBuildOutputs, inBuildTerms } from './build-terms.js';
import { type BuildEvent, type BuildEventListener, type BuildPhase, eventLogger } from './events.js';
import type { BuildPlan, TargetPlan } from './plan.js';
import { buildDirKey, openBuildDirs } from './workdir.js';

/**
 * One target of a planned build: the creator (analyze → detect → restore → build → export → cache) in that
 * target's build dirs, with its executor, writing its image into every output. In a multi-target build the
 * image is written by digest only (the index gets the tags afterwards); with one target it gets the tags
 * itself, exactly as a one-platform build always did. Everything the target needs is in the plan, so the
 * same call could run on another node.
 */
export interface RunTargetHooks {
  onEvent?: BuildEventListener;
  signal?: AbortSignal;
  /** Creates the target's executor (default: host processes; oci needs the exec room). */
  executor?: (target: TargetPlan) => Executor | Promise<Executor>;
}

export interface TargetReport {
  platform: string;
  runs: 'native' | 'emulated';
  executor: string;
  digest: Digest;
  mediaType: string;
  manifestSize: number;
  /** Manifest + config + every layer (run image layers included), in bytes. */
  size: number;
  /**
   * Blob bytes (layers, config) this target sent to registry outputs; 0 when every blob was already there
   * (a no-change rebuild) or the output is an OCI layout. Manifests are not counted.
   */
  bytesUploaded: number;
  /** Tags the image itself got (one-target builds); [] when an index holds the tags. */
  tags: string[];
  runImage: { reference: string; topLayer: string };
  buildImage?: { reference: string; digest: Digest };
  buildpacks: Array<{ id: string; version: string }>;
  processes: Array<{ type: string; default: boolean }>;
  layers: Array<{ name: string; digest: Digest; size: number; outcome: LayerOutcome }>;
  /** The app layers by outcome: written and uploaded, already there, or mounted from another repository. */
  /** reused: taken from the previous image; existing: already in the destination, not from the previous image. */
  layerCounts: Record<LayerOutcome, number>;
  baseLayers: Record<'exists' | 'mounted' | 'uploaded', number>;
  cache?: { location: string; layers: Array<{ name: string; outcome: string }> };
  /** Seconds: each phase, time inside buildpacks, what came before the phases, and the whole target. */
  timings: Record<CreatePhase, number> & { total: number; buildpacks: number; prepare: number };
  warnings: string[];
  /** Set when keepTemp: the workspace and layers dir of this build. */
  workDir?: string;
  /** Farm builds: where the target ran, earlier failed attempts, and the bytes that went to the node and back. */
  farm?: {
    node: string;
    attempts: Array<{ node: string; code: string; message: string }>;
    bytesSent: number;
    bytesReceived: number;
    blobsSent: number;
    blobsReceived: number;
  };
}

export async function runTarget(
  plan: BuildPlan,
  target: TargetPlan,
  hooks: RunTargetHooks = {},
): Promise<TargetReport> {
  const t0 = performance.now();
  const opts = plan.options;
  let phase: BuildPhase = 'prepare';
  let closeExecutor: () => Promise<void> = async () => {};
  const emit = (e: BuildEvent) => hooks.onEvent?.(e);
  const log = eventLogger(target.name, () => phase, emit);
  emit({ type: 'target-start', target: target.name, phase, runs: target.runs, executor: target.executor });

  const dirs = await openBuildDirs({
    key: buildDirKey(formatImageLocation(plan.outputLocation), target.name),
    dataDir: packfarmDataDir(plan.env),
    tmpDir: opts.tmpDir,
    keepTemp: opts.keepTemp,
  });
  try {
    const synced = await syncAppDir(plan.appPath, dirs.app, plan.appFilter);
    log.debug(
      `workspace ${dirs.app}: ${synced.copied} file(s) copied, ${synced.kept} unchanged, ${synced.removed} removed`,
    );
    await writePlatformEnv(dirs.platform, plan.userEnv);

    let uploaded = 0;
    const counting = (store: ImageStore) =>
      countUploads(store, (n) => {
        uploaded += n;
        emit({ type: 'upload', target: target.name, phase, bytes: uploaded });
      });
    const outputs: ExportOutput[] = plan.outputs.map((o) => ({
      store: counting(o.store),
      // Several targets: each image by digest only; the index is tagged once all of them exist.
      tags: plan.index ? [] : [...o.tags],
      ...(o.names && !plan.index ? { names: [...o.names] } : {}),
    }));
    phase = 'prepare';
    const prepared = hooks.executor
      ? { executor: await hooks.executor(target) }
      : await targetExecutor(plan, target, dirs, { log, ...(hooks.signal ? { signal: hooks.signal } : {}) });
    const executor = prepared.executor;
    closeExecutor = async () => executor.close?.();
    phase = 'analyze';
    const cache = plan.cache ? targetCache(plan.cache.location, target, plan.index) : undefined;

    const result: CreateResult = await create({
      appDir: dirs.app,
      layersDir: dirs.layers,
      platformDir: dirs.platform,
      buildpacks: target.buildpacks.store,
      order: target.buildpacks.order,
      runImage: {
        store: target.runImage.store,
        target: target.runImage.target,
        name: target.runImage.name,
        mirrors: target.runImage.mirrors,
      },
      outputs,
      ...(plan.previousImage ? { previousImage: plan.previousImage } : {}),
      cache,
      clearCache: opts.clearCache,
      platform: target.platform,
      platformApi: opts.platformApi,
      createdAt: plan.createdAt,
      defaultProcess: opts.defaultProcess,
      projectMetadata: projectMetadata(plan.project),
      reportPath: join(dirs.layers, 'report.toml'),
      hostPaths: { appDir: dirs.app, layersDir: dirs.layers },
      executor,
      // The build image's CNB user owns what buildpacks create, in the layers and in the image, as under pack.
      ...(prepared.user ? { uid: prepared.user.uid, gid: prepared.user.gid } : {}),
      ...(opts.gid !== undefined ? { gid: opts.gid } : {}),
      hostEnv: plan.env,
      logger: log,
      onEvent: (e) => {
        if (e.type === 'phase-start') phase = e.phase;
        const out = targetEvent(e, target.name, phase);
        if (out) emit(out);
      },
      ...(hooks.signal ? { signal: hooks.signal } : {}),
    }).catch((err: unknown) => {
      throw inBuildTerms(err);
    });
    // Several targets: one subdirectory per target (linux-arm64/) under the output dirs.
    const sub = plan.index ? target.name.replaceAll('/', '-') : '';
    await copyBuildOutputs(
      {
        ...(opts.sbomOutputDir ? { sbomOutputDir: join(opts.sbomOutputDir, sub) } : {}),
        ...(opts.reportOutputDir ? { reportOutputDir: join(opts.reportOutputDir, sub) } : {}),
      },
      dirs.layers,
      plan.cwd,
    );

    const report = targetReport(plan, target, result, {
      executorKind: executor.kind,
      uploaded,
      totalMs: performance.now() - t0,
      workDir: dirs.root,
    });
    emit({
      type: 'target-end',
      target: target.name,
      phase,
      digest: report.digest,
      seconds: report.timings.total,
    });
    return report;
  } finally {
    await closeExecutor().catch(() => undefined);
    await dirs.release();
  }
}

/** The report of one target, from what create() answered and what this run counted. */
function targetReport(
  plan: BuildPlan,
  target: TargetPlan,
  result: CreateResult,
  run: { executorKind: TargetReport['executor']; uploaded: number; totalMs: number; workDir: string },
): TargetReport {
  const opts = plan.options;
  const ex = result.exported;
  const baseLayers = { exists: 0, mounted: 0, uploaded: 0 };
  for (const b of ex.baseLayers) baseLayers[b.outcome]++;
  const layerCounts: Record<LayerOutcome, number> = { added: 0, reused: 0, existing: 0, mounted: 0 };
  for (const l of ex.layers) layerCounts[l.outcome]++;
  const md = ex.lifecycleMetadata;
  const phases = Object.values(result.timings).reduce((a, b) => a + b, 0);
  const total = run.totalMs;
  const s = (ms: number) => Math.round(ms) / 1000;
  const manifest = parseWith(
    ImageManifestSchema,
    parseJson(ex.manifestBytes.toString('utf8'), `${target.name} manifest`),
    `${target.name} manifest`,
  );
  const report: TargetReport = {
    platform: target.name,
    runs: target.runs,
    executor: run.executorKind,
    digest: ex.digest,
    mediaType: ex.mediaType,
    manifestSize: ex.manifestSize,
    size: ex.manifestSize + manifest.config.size + manifest.layers.reduce((a, l) => a + l.size, 0),
    bytesUploaded: run.uploaded,
    tags: plan.index ? [] : ex.tags,
    runImage: { reference: md.runImage.reference, topLayer: md.runImage.topLayer },
    ...(target.buildImage
      ? { buildImage: { reference: target.buildImage.name, digest: target.buildImage.digest } }
      : {}),
    buildpacks: result.detected.group.map((g) => ({ id: g.id, version: g.version })),
    processes: result.built.metadata.processes.map((p) => ({
      type: p.type,
      default: p.type === (opts.defaultProcess ?? result.built.metadata.buildpackDefaultProcessType),
    })),
    layers: ex.layers.map((l) => ({ name: l.name, digest: l.digest, size: l.size, outcome: l.outcome })),
    layerCounts,
    baseLayers,
    ...(plan.cache && result.cache
      ? {
          cache: {
            location: plan.cache.description,
            layers: result.cache.layers.map((l) => ({
              name: `${l.buildpack}:${l.layer}`,
              outcome: l.outcome,
            })),
          },
        }
      : {}),
    timings: {
      analyze: s(result.timings.analyze),
      detect: s(result.timings.detect),
      restore: s(result.timings.restore),
      build: s(result.timings.build),
      export: s(result.timings.export),
      cache: s(result.timings.cache),
      buildpacks: s(result.buildpackMs),
      prepare: s(total - phases),
      total: s(total),
    },
    warnings: ex.warnings,
    ...(opts.keepTemp ? { workDir: run.workDir } : {}),
  };
  return report;
}

/** create()'s event in build terms, tagged with the target; undefined for what a build does not report. */
function targetEvent(e: CreateEvent, target: string, phase: BuildPhase): BuildEvent | undefined {
  switch (e.type) {
    case 'phase-start':
      return { type: 'phase-start', target, phase: e.phase };
    case 'phase-end':
      return { type: 'phase-end', target, phase: e.phase, seconds: e.durationMs / 1000 };
    case 'build':
      if (e.event.type === 'buildpack-output')
        return {
          type: 'output',
          target,
          phase,
          buildpack: e.event.id,
          stream: e.event.stream,
          line: e.event.line,
        };
      return undefined;
    case 'detect':
      if (e.event.type === 'buildpack' || e.event.type === 'buildpack-skipped')
        return {
          type: 'detected',
          target,
          phase,
          buildpack: `${e.event.id}@${e.event.version}`,
          verdict: e.event.type === 'buildpack' ? e.event.verdict : 'skipped',
        };
      return undefined;
    case 'export':
      if (e.event.type === 'layer')
        return {
          type: 'layer',
          target,
          phase,
          name: e.event.name,
          outcome: e.event.outcome,
          digest: e.event.digest,
          size: e.event.size,
        };
      if (e.event.type === 'warning') return { type: 'warning', target, phase, message: e.event.message };
      return undefined;
  }
  return undefined;
}

/**
 * The executor of a target: host processes, or runc in the target's build image, whose root filesystem is
 * unpacked once per manifest digest under the data dir (and reused by later builds).
 */
async function targetExecutor(
  plan: BuildPlan,
  target: TargetPlan,
  dirs: { app: string; layers: string; platform: string; scratch: string },
  opts: { log: Logger; signal?: AbortSignal },
): Promise<{ executor: Executor; user?: { uid: number; gid: number } }> {
  if (target.executor === 'host') return { executor: createHostExecutor() };
  const image = target.buildImage;
  if (!image) throw new Error(`runTarget: target ${target.name} has the oci executor but no build image`);
  const executor = await createBuildImageExecutor({
    store: image.store,
    image: image.digest,
    platform: target.platform,
    dataDir: packfarmDataDir(plan.env),
    ...(opts.signal ? { signal: opts.signal } : {}),
    dirs: {
      app: dirs.app,
      layers: dirs.layers,
      platform: dirs.platform,
      buildpacks: target.buildpacks.store.buildpacksDir,
    },
    network: plan.options.network !== 'none',
    volumes: plan.options.volumes,
  });
  const rootfs = executor.rootfs;
  opts.log.debug(
    `build image ${image.name} (${image.digest}) ${rootfs.unpacked ? 'unpacked' : 'already unpacked'} at ${rootfs.dir}`,
  );
  return { executor, user: { uid: rootfs.config.uid, gid: rootfs.config.gid } };
}

/**
 * The cache of one target. A cache dir keeps one subdirectory per platform already; a cache image is one
 * image per tag, so with several targets each gets its own tag (`<tag>-linux-arm64`).
 */
function targetCache(location: CacheLocation, target: TargetPlan, multi: boolean): CacheLocation {
  if (location.kind !== 'image' || !multi) return location;
  return { ...location, tag: `${location.tag}-${target.name.replaceAll('/', '-')}` };
}

/**
 * A view of a registry store that reports the bytes of every blob it uploads (progress); layout stores are
 * left as they are (the exporter moves finished files into them directly).
 */
function countUploads(store: ImageStore, onBytes: (n: number) => void): ImageStore {
  if (!store.registryRepository) return store;
  const counted = async (open: () => Readable | Promise<Readable>): Promise<Readable> => {
    const src = await open();
    const counter = new Transform({
      transform(chunk: Buffer, _enc, cb) {
        onBytes(chunk.length);
        cb(null, chunk);
      },
    });
    src.on('error', (err) => counter.destroy(err));
    return src.pipe(counter);
  };
  return {
    description: store.description,
    registryRepository: store.registryRepository,
    hasBlob: (d) => store.hasBlob(d),
    getBlob: (d) => store.getBlob(d),
    putBlob: (input) => store.putBlob({ ...input, open: () => counted(input.open) }),
    resolve: (t) => store.resolve(t),
    getManifest: (t) => store.getManifest(t),
    putManifest: (i) => store.putManifest(i),
    listTags: () => store.listTags(),
  };
}

function projectMetadata(project: BuildPlan['project']): ProjectMetadata | undefined {
  if (!project) return undefined;
  const p = project.project;
  if (!p.version && !p.sourceUrl) return undefined;
  return {
    source: {
      type: 'project',
      ...(p.version ? { version: { declared: p.version } } : {}),
      ...(p.sourceUrl ? { metadata: { url: p.sourceUrl } } : {}),
    },
  };
}
