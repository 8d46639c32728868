import { createReadStream } from 'node:fs';
import { mkdir, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import type { MemoryEntry } from '../archive/index.js';
import { readStoreToml } from '../buildpack/store.js';
import { LATEST_PLATFORM_API, checkPlatformApi } from '../platform/api.js';
import {
  type BuildpackLayer,
  buildpackLayersDir,
  escapeId,
  readBuildpackLayers,
} from '../buildpack/layers.js';
import { PROCESS_TYPE_PATTERN } from '../buildpack/launch.js';
import { assembleImage, transferBaseLayers } from '../image/assemble.js';
import { digestReference, repositoryName } from '../image/image-name.js';
import { type BaseImage, readBaseImage } from '../image/read.js';
import type { LayoutStore } from '../image/layout-store.js';
import type { ImageStore } from '../image/store.js';
import {
  type LaunchLayerPaths,
  computeLaunchEnv,
  envDifference,
  envFromConfig,
  envToConfig,
} from '../launch/env.js';
import { LAUNCHER_PATH, PROCESS_DIR, launcherScript, processScript } from '../launch/scripts.js';
import type { Digest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import { EXIT, withExitCode } from '../platform/exit-codes.js';
import { type AnalyzedFile, type GroupFile, runImageTargetOf } from '../platform/files.js';
import {
  type BuildMetadata as BuildMetadataLabel,
  Label,
  type LifecycleMetadata,
  LifecycleMetadataSchema,
  type ProjectMetadata,
} from '../platform/labels.js';
import {
  type BuildMetadata,
  buildMetadataPath,
  encodeBuildMetadata,
  readBuildMetadata,
} from '../platform/metadata.js';
import { type ExportReport, writeReport } from '../platform/report.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { canonicalJson } from '../util/json.js';
import { type Logger, silentLogger } from '../util/log.js';
import { REPRODUCIBLE_EPOCH } from '../util/time.js';
import { discard } from '../util/stream.js';
import { parseJson, parseWith } from '../util/validate.js';
import { makeTempDir } from '../util/tempdir.js';
import { assignSlices } from './export-slices.js';
import { archiveLayerProducer, type LayerProducer, type LayerSpec } from './layer-producer.js';
import { type HostPaths, type PathRewriter, hostPathRewriter, processesToImagePaths } from './host-paths.js';
import { isDir } from '../util/fs.js';
import { type LayerTracker, type TarParams, layerKey } from './layer-state.js';

/** Where an image goes: a store and the tags to put the manifest under; `names` are the references reported. */
export interface ExportOutput {
  store: ImageStore;
  tags: string[];
  /** Full names for report.toml (default: `<store description>:<tag>`). */
  names?: string[];
}

/**
 * Add a destination to a list of outputs: a store already listed (the same repository or layout) gets one more
 * tag, another store becomes another output that receives the same blobs and manifest.
 */
export function addExportOutput(outputs: ExportOutput[], store: ImageStore, tag: string, name: string): void {
  const same = outputs.find((x) => x.store.description === store.description);
  if (same) {
    same.tags.push(tag);
    same.names?.push(name);
  } else outputs.push({ store, tags: [tag], names: [name] });
}

export type ExportEvent =
  | { type: 'layer'; name: string; outcome: LayerOutcome; digest: Digest; size: number }
  /** The image is about to be written to this output (the reference exporter's "Saving …" line). */
  | { type: 'saving'; name: string }
  | { type: 'warning'; message: string };

/**
 * What happened to one layer in one output: `reused` — the previous image's layer (same blob), kept;
 * `existing` — not in the previous image, but the output already had the blob (left by an interrupted
 * publish, or by another image); `mounted` — cross-repository mount; `added` — written or uploaded now.
 */
export type LayerOutcome = 'added' | 'reused' | 'existing' | 'mounted';

export interface ExportOptions {
  layersDir: string;
  appDir: string;
  group: GroupFile;
  analyzed?: AnalyzedFile | undefined;
  /** metadata.toml; default: read `<layers>/config/metadata.toml`. */
  metadata?: BuildMetadata;
  /** The run image: a store, a tag or digest in it, and the name recorded in labels. */
  runImage: { store: ImageStore; target: string; name?: string; mirrors?: string[] };
  /** Target platform (default: analyzed.toml's run-image target, else this machine's when the run image is an index). */
  platform?: Platform;
  outputs: ExportOutput[];
  platformApi?: string;
  /** Image `created` and every layer mtime (default 1980-01-01T00:00:01Z). */
  createdAt?: Date;
  /** Owner of buildpack and app layers (default 1000:1000). */
  uid?: number;
  gid?: number;
  /** `-process-type`: overrides the buildpack-provided default process. */
  defaultProcess?: string | undefined;
  projectMetadata?: ProjectMetadata;
  /**
   * Whether the run image has /bin/sh (default: true unless its config label `io.packfarm.shell` is "false").
   * Without a shell only the default process starts, with static env; see spec/launch.md.
   */
  shell?: boolean;
  /** The previous app image, for launch layers restored as metadata only (no dir): their blobs are reused. */
  previousImage?: { store: ImageStore; target: string } | undefined;
  /**
   * Where the buildpacks saw the app and layers dirs, when not at the in-image paths (host executor):
   * process commands, args, working dirs and launch env values naming them are rewritten.
   */
  hostPaths?: HostPaths;
  /** In-image paths (defaults /layers, /workspace). */
  imageLayersDir?: string;
  imageAppDir?: string;
  /** How layer blobs are written (default: deterministic tar+gzip, see archiveLayerProducer). */
  layerProducer?: LayerProducer;
  /** Layers written at once (default 2). */
  concurrency?: number;
  /** Where layer blobs are written before they are put (default: a temp dir under os.tmpdir()). */
  tmpDir?: string;
  /** Write report.toml here. */
  reportPath?: string;
  /**
   * The build dir's layer records (phase/layer-state.ts): a buildpack layer dir whose tree is unchanged since
   * it was recorded gets its recorded diffID without being read; every dir layer hashed is noted for the next
   * build. Used only with the default layer producer (the records describe its tars).
   */
  layerTracker?: LayerTracker;
  launcherVersion?: string;
  logger?: Logger;
  onEvent?: (e: ExportEvent) => void;
  signal?: AbortSignal;
}

export interface ExportedLayer {
  name: string;
  digest: Digest;
  diffId: Digest;
  size: number;
  outcome: LayerOutcome;
}

export interface ExportResult {
  digest: Digest;
  mediaType: string;
  manifestSize: number;
  manifestBytes: Buffer;
  configBytes: Buffer;
  tags: string[];
  /** Layers packfarm added (run-image layers excluded), in image order. */
  layers: ExportedLayer[];
  /** Run-image layers: how they got to each output (first output). */
  baseLayers: Array<{ digest: Digest; outcome: 'exists' | 'mounted' | 'uploaded' }>;
  lifecycleMetadata: LifecycleMetadata;
  report: ExportReport;
  warnings: string[];
}

/** A label on a run image saying it has no /bin/sh (any other value, or none, means it has one). */
export const SHELL_LABEL = 'io.packfarm.shell';

/** A layer of the new image, planned: how to produce it, or where it already is. */
interface PlannedLayer {
  /** Key for metadata and logs: `bp:<id>:<layer>`, `app`, `app-slice-N`, `sbom`, `launcher`, `process-types`, `config`. */
  name: string;
  createdBy: string;
  /** What to write (see `LayerProducer`). */
  spec?: LayerSpec;
  /**
   * A directory layer that may be unchanged since the previous image: its diffID is learnt from a plain tar
   * first (no gzip), and when the previous image has that diffID its blob is reused without compressing.
   */
  probe?: boolean;
  /** A buildpack layer dir (`<buildpack id>:<layer>`), looked up in and noted to the layer records. */
  recordKey?: string;
  /** An existing blob in another store (a launch layer kept as metadata only). */
  existing?: { store: ImageStore; digest: Digest; size: number; diffId: Digest };
}

interface ProducedLayer {
  planned: PlannedLayer;
  digest: Digest;
  size: number;
  diffId: Digest;
  file?: string;
  /** Where the blob already is when it was not written (a previous image's layer). */
  source?: ImageStore;
}

/** The previous app image, as far as export reuses it: its lifecycle metadata and its layers by diffID. */
interface PreviousImage {
  store: ImageStore;
  metadata: LifecycleMetadata;
  byDiffId: Map<string, { digest: Digest; size: number }>;
}

/** What every export step reads: the options resolved once. */
interface ExportContext {
  opts: ExportOptions;
  log: Logger;
  warn: (message: string) => void;
  warnings: string[];
  platformApi: string;
  created: Date;
  /** In-image layers and app dirs, without a trailing '/'. */
  imgLayers: string;
  imgApp: string;
  rewrite: PathRewriter;
  metadata: BuildMetadata;
  platform: Platform | undefined;
  base: BaseImage;
  shell: boolean;
  previous: PreviousImage | undefined;
  producer: LayerProducer;
}

/** The buildpacks' launch layers: planned layers, their lifecycle metadata, and their files for env and exec.d. */
interface BuildpackLayersPlan {
  planned: PlannedLayer[];
  metadata: LifecycleMetadata['buildpacks'];
  launchLayers: Array<LaunchLayerPaths & { layer: BuildpackLayer }>;
}

/** How the image starts: processes, the default one, the config's env/entrypoint and the process scripts. */
interface LaunchPlan {
  processes: BuildMetadata['processes'];
  defaultType: string | undefined;
  scripts: MemoryEntry[];
  env: Map<string, string>;
  entrypoint: string[] | undefined;
  cmd: string[] | undefined;
  workingDir: string;
}

function dropUndefined<T extends Record<string, unknown>>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/**
 * The export phase (platform.md "exporter"): the run image plus the build's launch layers, SBOM, app, launcher,
 * process types and config as a new image in every output, with the lifecycle's labels. Layers are written
 * once each (in parallel), as files, then put into each output; outputs that have a blob skip it.
 */
export async function exportImage(opts: ExportOptions): Promise<ExportResult> {
  const ctx = await prepareExport(opts);
  const buildpacks = await buildpackLayers(ctx);
  const sbom = await sbomLayer(ctx);
  const app = await appLayers(ctx);
  const launch = await launchPlan(ctx, buildpacks.launchLayers);
  const planned = [...buildpacks.planned, ...sbom, ...app, ...lifecycleLayers(ctx, launch)];

  // With one OCI layout as the only output, layers are written inside the layout directory and renamed into
  // blobs/ when new: each blob is written exactly once instead of being copied from a temp file.
  const direct = opts.outputs.length === 1 && !opts.tmpDir ? layoutOf(opts.outputs[0]!.store) : undefined;
  const tmp = direct
    ? await direct.makeTempDir('export')
    : await makeTempDir(opts.tmpDir ?? tmpdir(), 'export');
  try {
    const produced = await produceLayers(ctx, planned, tmp);
    const lifecycleMetadata = lifecycleLabel(ctx, buildpacks.metadata, produced);
    const assembled = assembleImage({
      base: ctx.base,
      layers: produced.map((p) => ({
        digest: p.digest,
        size: p.size,
        diffId: p.diffId,
        createdBy: p.planned.createdBy,
      })),
      created: ctx.created,
      ...(ctx.platform ? { platform: { ...ctx.base.platform, ...ctx.platform } } : {}),
      config: {
        Env: envToConfig(launch.env),
        Entrypoint: launch.entrypoint,
        Cmd: launch.cmd,
        WorkingDir: launch.workingDir,
        Labels: imageLabels(ctx, lifecycleMetadata, launch),
      },
    });
    const saved = await saveImage(ctx, produced, assembled, direct);
    const report: ExportReport = {
      image: {
        tags: saved.tags,
        digest: assembled.manifestDigest,
        manifestSize: assembled.manifestBytes.length,
      },
    };
    if (opts.reportPath) await writeReport(opts.reportPath, report);
    return {
      digest: assembled.manifestDigest,
      mediaType: assembled.mediaType,
      manifestSize: assembled.manifestBytes.length,
      manifestBytes: assembled.manifestBytes,
      configBytes: assembled.configBytes,
      tags: saved.tags,
      layers: saved.layers,
      baseLayers: saved.baseLayers,
      lifecycleMetadata,
      report,
      warnings: ctx.warnings,
    };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** Resolve the options once: Platform API, owners and times, in-image paths, build metadata, run image. */
async function prepareExport(opts: ExportOptions): Promise<ExportContext> {
  const platformApi = opts.platformApi ?? LATEST_PLATFORM_API;
  checkPlatformApi(platformApi);
  const log = opts.logger ?? silentLogger;
  const warnings: string[] = [];
  const warn = (message: string) => {
    warnings.push(message);
    log.warn(message);
    opts.onEvent?.({ type: 'warning', message });
  };
  if (opts.outputs.length === 0) throw new Error('exportImage: no outputs');
  const created = opts.createdAt ?? REPRODUCIBLE_EPOCH;
  const imgLayers = (opts.imageLayersDir ?? '/layers').replace(/\/+$/, '');
  const imgApp = (opts.imageAppDir ?? '/workspace').replace(/\/+$/, '');
  const rewrite: PathRewriter = opts.hostPaths
    ? hostPathRewriter(opts.hostPaths, { appDir: imgApp, layersDir: imgLayers })
    : (v) => v;
  const metadata = processesToImagePaths(
    opts.metadata ?? (await readBuildMetadata(buildMetadataPath(opts.layersDir))),
    rewrite,
  );
  const platform = opts.platform ?? platformOf(opts.analyzed);
  const base = await withExitCode(EXIT.EXPORT_ERROR, () =>
    readBaseImage(opts.runImage.store, opts.runImage.target, platform),
  );
  const shell = opts.shell ?? base.config.config?.Labels?.[SHELL_LABEL] !== 'false';
  const previous = opts.previousImage ? await readPrevious(opts.previousImage) : undefined;
  const producer =
    opts.layerProducer ??
    archiveLayerProducer({
      uid: opts.uid ?? 1000,
      gid: opts.gid ?? 1000,
      mtime: created,
      signal: opts.signal,
    });
  return {
    opts,
    log,
    warn,
    warnings,
    platformApi,
    created,
    imgLayers,
    imgApp,
    rewrite,
    metadata,
    platform,
    base,
    shell,
    previous,
    producer,
  };
}

/**
 * Step 1, buildpack layers: every launch=true layer of the group, in group order. A layer restored as metadata
 * only (no directory) is taken by reference from the previous image.
 */
async function buildpackLayers(ctx: ExportContext): Promise<BuildpackLayersPlan> {
  const { opts, previous, imgLayers } = ctx;
  const plan: BuildpackLayersPlan = { planned: [], metadata: [], launchLayers: [] };
  for (const bp of opts.group.group) {
    const dir = buildpackLayersDir(opts.layersDir, bp.id);
    const layers = await withExitCode(EXIT.EXPORT_ERROR, () =>
      readBuildpackLayers(dir, { buildpackApi: bp.api }),
    );
    const entry: LifecycleMetadata['buildpacks'][number] = { key: bp.id, version: bp.version, layers: {} };
    const store = await withExitCode(EXIT.EXPORT_ERROR, () => readStoreToml(dir));
    if (store) entry.store = { metadata: store.metadata };
    for (const layer of layers) {
      if (!layer.types.launch) continue;
      const name = `bp:${bp.id}:${layer.name}`;
      const imagePath = `${imgLayers}/${escapeId(bp.id)}/${layer.name}`;
      const createdBy = `Layer: '${layer.name}', Created by buildpack: ${bp.id}@${bp.version}`;
      const meta = {
        data: Object.keys(layer.metadata).length > 0 ? layer.metadata : undefined,
        build: layer.types.build,
        launch: true,
        cache: layer.types.cache,
      };
      if (layer.hasDir) {
        plan.launchLayers.push({
          buildpackId: bp.id,
          name: layer.name,
          hostPath: layer.path,
          imagePath,
          layer,
        });
        plan.planned.push({
          name,
          createdBy,
          probe: true,
          recordKey: layerKey(bp.id, layer.name),
          spec: { kind: 'dir', dir: layer.path, prefix: imagePath.slice(1) },
        });
        entry.layers[layer.name] = { sha: '', ...meta };
        continue;
      }
      // Restored as metadata only: the previous image's layer stays, by reference.
      const sha = previous?.metadata.buildpacks.find((b) => b.key === bp.id)?.layers[layer.name]?.sha;
      const found = sha ? previous?.byDiffId.get(sha) : undefined;
      if (!previous || !sha || !found) {
        throw new PackfarmError(
          'EXPORT_LAYER_MISSING',
          `${layer.tomlPath}: launch layer "${layer.name}" has no directory and the previous image has no such layer to reuse`,
          { exitCode: EXIT.EXPORT_ERROR },
        );
      }
      // Its files are not here, so its env dirs and exec.d cannot be resolved into config and scripts.
      ctx.warn(
        `launch layer ${bp.id}:${layer.name} is reused from the previous image without its files: its env and exec.d are not applied (spec/launch.md)`,
      );
      plan.planned.push({
        name,
        createdBy,
        existing: { store: previous.store, digest: found.digest, size: found.size, diffId: sha as Digest },
      });
      entry.layers[layer.name] = { sha, ...meta };
    }
    plan.metadata.push(entry);
  }
  return plan;
}

/** Step 2, the SBOM layer: `<layers>/sbom/launch`, when the build left one. */
async function sbomLayer(ctx: ExportContext): Promise<PlannedLayer[]> {
  const sbomDir = join(ctx.opts.layersDir, 'sbom', 'launch');
  if (!(await isDir(sbomDir))) return [];
  return [
    {
      name: 'sbom',
      createdBy: 'Layer: SBOM',
      probe: true,
      spec: { kind: 'dir', dir: sbomDir, prefix: `${ctx.imgLayers.slice(1)}/sbom/launch` },
    },
  ];
}

/** Step 3, app layers: one per slice of launch.toml (in order), then the rest of the app dir. */
async function appLayers(ctx: ExportContext): Promise<PlannedLayer[]> {
  const slices = ctx.metadata.slices.filter((s) => s.paths.length > 0);
  const assignment = await assignSlices(ctx.opts.appDir, slices);
  const planned: PlannedLayer[] = [];
  for (let i = 0; i <= slices.length; i++) {
    const index = i;
    planned.push({
      name: appLayerName(i, slices.length),
      createdBy:
        i < slices.length ? `Layer: 'slice-${i + 1}', Created by lifecycle:exporter` : 'Layer: Application',
      probe: true,
      spec: {
        kind: 'dir',
        dir: ctx.opts.appDir,
        prefix: ctx.imgApp.slice(1),
        filter:
          slices.length === 0 ? undefined : (rel, st) => st.isDirectory() || assignment.get(rel) === index,
      },
    });
  }
  return planned;
}

const appLayerName = (i: number, slices: number) => (i < slices ? `app-slice-${i}` : 'app');

/**
 * Step 4, how the image starts: the launch env of every process (values naming in-image paths), a
 * /cnb/process script per process, and the config's env, entrypoint and command. With a shell the launcher
 * picks the process at start; without one the default process is resolved into the config.
 */
async function launchPlan(
  ctx: ExportContext,
  launchLayers: BuildpackLayersPlan['launchLayers'],
): Promise<LaunchPlan> {
  const { metadata, opts, imgApp, warn } = ctx;
  const processes = metadata.processes;
  for (const p of processes) {
    if (!PROCESS_TYPE_PATTERN.test(p.type)) {
      throw new PackfarmError('EXPORT_INVALID_PROCESS', `process type "${p.type}" cannot be a file name`);
    }
  }
  let defaultType = opts.defaultProcess ?? metadata.buildpackDefaultProcessType;
  if (defaultType && !processes.some((p) => p.type === defaultType)) {
    warn(
      `default process type "${defaultType}" is not among the processes (${processes.map((p) => p.type).join(', ') || 'none'}): the image has no default process`,
    );
    defaultType = undefined;
  }
  const order = opts.group.group.map((g) => g.id);
  const baseEnv = envFromConfig(ctx.base.config.config?.Env);
  // The launch env for every process, or for one process type; values name in-image paths.
  const launchEnv = async (processType?: string) => {
    const env = await computeLaunchEnv({
      base: baseEnv,
      layers: launchLayers,
      buildpackOrder: order,
      processType,
    });
    return new Map([...env].map(([k, v]) => [k, ctx.rewrite(v)] as const));
  };
  const general = await launchEnv();
  const envOf = new Map<string, Map<string, string>>();
  const scripts: MemoryEntry[] = [];
  let anyExecD = false;
  for (const p of processes) {
    const own = await launchEnv(p.type);
    envOf.set(p.type, own);
    const execD = execDFor(p.type, order, launchLayers);
    if (execD.length > 0) anyExecD = true;
    scripts.push({
      path: `${PROCESS_DIR.slice(1)}/${p.type}`,
      type: 'file',
      mode: 0o755,
      content: processScript({
        type: p.type,
        buildpackId: p.buildpackId,
        command: p.command,
        args: p.args,
        workingDir: imageWorkingDir(p.workingDir, imgApp),
        env: envDifference(general, own),
        execD,
      }),
    });
  }
  if (!ctx.shell) {
    if (anyExecD) warn('the run image has no /bin/sh: exec.d programs of the launch layers will not run');
    if (processes.length > 1)
      warn(
        'the run image has no /bin/sh: only the default process can start (no /cnb/process scripts, no CNB_PROCESS_TYPE)',
      );
  }

  const basePath = general.get('PATH') ?? '';
  const cnbEnv = new Map(general);
  cnbEnv.set('PATH', [PROCESS_DIR, '/cnb/lifecycle', basePath].filter(Boolean).join(':'));
  cnbEnv.set('CNB_PLATFORM_API', ctx.platformApi);
  cnbEnv.set('CNB_LAYERS_DIR', ctx.imgLayers);
  cnbEnv.set('CNB_APP_DIR', imgApp);
  cnbEnv.set('CNB_DEPRECATION_MODE', 'quiet');

  const plan: LaunchPlan = {
    processes,
    defaultType,
    scripts,
    env: cnbEnv,
    entrypoint: undefined,
    cmd: undefined,
    workingDir: imgApp,
  };
  const defaultProc = processes.find((p) => p.type === defaultType);
  if (ctx.shell) {
    plan.entrypoint = [LAUNCHER_PATH];
  } else if (defaultProc) {
    // No shell: the default process is resolved into the config, its own env included.
    const own = envOf.get(defaultProc.type) ?? general;
    plan.env = new Map(cnbEnv);
    for (const [k, v] of envDifference(general, own))
      plan.env.set(k, k === 'PATH' ? `${PROCESS_DIR}:/cnb/lifecycle:${v}` : v);
    plan.entrypoint = defaultProc.command;
    plan.cmd = defaultProc.args.length > 0 ? defaultProc.args : undefined;
    plan.workingDir = imageWorkingDir(defaultProc.workingDir, imgApp);
  } else {
    warn('the run image has no /bin/sh and there is no default process: the image has no entrypoint');
  }
  return plan;
}

/** The exec.d programs of a process type, in buildpack order then layer name, general ones first per layer. */
function execDFor(
  processType: string,
  order: readonly string[],
  launchLayers: BuildpackLayersPlan['launchLayers'],
): string[] {
  const execD: string[] = [];
  for (const bp of order) {
    for (const l of launchLayers
      .filter((x) => x.buildpackId === bp)
      .sort((a, b) => (a.name < b.name ? -1 : 1))) {
      for (const n of l.layer.execD.all) execD.push(`${l.imagePath}/exec.d/${n}`);
      for (const n of l.layer.execD.byProcess[processType] ?? [])
        execD.push(`${l.imagePath}/exec.d/${processType}/${n}`);
    }
  }
  return execD;
}

/** Step 5, the lifecycle's own layers: the launcher, the process scripts and the build metadata. */
function lifecycleLayers(ctx: ExportContext, launch: LaunchPlan): PlannedLayer[] {
  const launcher: MemoryEntry = {
    path: LAUNCHER_PATH.slice(1),
    type: 'file',
    mode: 0o755,
    content: launcherScript({
      defaultProcess: launch.defaultType,
      processTypes: launch.processes.map((p) => p.type),
    }),
  };
  const metadataToml = encodeBuildMetadata(ctx.metadata, ctx.platformApi);
  return [
    { name: 'launcher', createdBy: 'Layer: Launcher', spec: { kind: 'entries', entries: [launcher] } },
    {
      name: 'process-types',
      createdBy: 'Layer: Process Types',
      spec: {
        kind: 'entries',
        entries: [{ path: PROCESS_DIR.slice(1), type: 'dir', mode: 0o755 }, ...launch.scripts],
      },
    },
    {
      name: 'config',
      createdBy: 'Layer: Config',
      spec: {
        kind: 'entries',
        entries: [{ path: 'cnb/config/metadata.toml', type: 'file', content: metadataToml }],
      },
    },
  ];
}

/**
 * Step 6, produce every layer once, in parallel: taken by reference, recognised as unchanged since the previous
 * image (plain-tar diffID, no gzip), or written to a file under `tmp`.
 */
async function produceLayers(
  ctx: ExportContext,
  planned: PlannedLayer[],
  tmp: string,
): Promise<ProducedLayer[]> {
  const { previous, producer } = ctx;
  const limit = pLimit(ctx.opts.concurrency ?? 2);
  // The records describe the default producer's tars only.
  const tracker = ctx.opts.layerProducer ? undefined : ctx.opts.layerTracker;
  return Promise.all(
    planned.map((p, i) =>
      limit(async (): Promise<ProducedLayer> => {
        ctx.opts.signal?.throwIfAborted();
        if (p.existing) return { planned: p, ...p.existing, source: p.existing.store };
        const spec = p.spec!;
        let note = (_diffId: Digest) => {};
        if (tracker && p.recordKey && spec.kind === 'dir') {
          const key = p.recordKey;
          const tar: TarParams = {
            prefix: spec.prefix,
            uid: ctx.opts.uid ?? 1000,
            gid: ctx.opts.gid ?? 1000,
            mtime: ctx.created.toISOString(),
          };
          // Taken before the dir is read, so a change while it is read shows at save time.
          const fp = await tracker.fingerprint(spec.dir);
          note = (diffId) => tracker.note(key, spec.dir, tar, diffId, fp);
          const known = tracker.trusted(key, tar, fp);
          const found = known ? previous?.byDiffId.get(known) : undefined;
          if (known && found && previous) {
            ctx.log.debug(`layer ${key}: unchanged since the last build (stat data), ${known}`);
            note(known);
            return {
              planned: p,
              digest: found.digest,
              size: found.size,
              diffId: known,
              source: previous.store,
            };
          }
        }
        if (p.probe && previous && previous.byDiffId.size > 0) {
          const r = await withExitCode(EXIT.EXPORT_ERROR, () =>
            producer.write(spec, discard(), { raw: true }),
          );
          note(r.diffId);
          const found = previous.byDiffId.get(r.diffId);
          if (found)
            return {
              planned: p,
              digest: found.digest,
              size: found.size,
              diffId: r.diffId,
              source: previous.store,
            };
        }
        const file = join(tmp, `layer-${i}.tar.gz`);
        const r = await withExitCode(EXIT.EXPORT_ERROR, () => producer.write(spec, file));
        note(r.diffId);
        return { planned: p, digest: r.digest, size: r.size, diffId: r.diffId, file };
      }),
    ),
  );
}

/** Step 7a, the lifecycle metadata label: every layer's diffID, the buildpacks' layers and the run image. */
function lifecycleLabel(
  ctx: ExportContext,
  buildpacks: LifecycleMetadata['buildpacks'],
  produced: ProducedLayer[],
): LifecycleMetadata {
  const { opts, base } = ctx;
  const shaOf = (name: string) => produced.find((p) => p.planned.name === name)?.diffId ?? '';
  for (const p of produced) {
    const m = /^bp:(.+):([^:]+)$/.exec(p.planned.name);
    if (!m) continue;
    const layer = buildpacks.find((b) => b.key === m[1])?.layers[m[2]!];
    if (layer) layer.sha = p.diffId;
  }
  const slices = produced.filter((p) => /^app(-slice-\d+)?$/.test(p.planned.name));
  const runName = opts.runImage.name ?? `${opts.runImage.store.description}:${opts.runImage.target}`;
  const mirrors = opts.runImage.mirrors?.length ? opts.runImage.mirrors : undefined;
  return parseWith(
    LifecycleMetadataSchema,
    dropUndefined({
      app: slices.map((p) => ({ sha: p.diffId })),
      sbom: produced.some((p) => p.planned.name === 'sbom') ? { sha: shaOf('sbom') } : undefined,
      buildpacks,
      config: { sha: shaOf('config') },
      launcher: { sha: shaOf('launcher') },
      'process-types': { sha: shaOf('process-types') },
      runImage: dropUndefined({
        topLayer: base.config.rootfs.diff_ids.at(-1) ?? '',
        // Where the run image was read (a mirror, perhaps), as the reference records it; the name stays the
        // run.toml entry's image.
        reference: digestReference(
          opts.runImage.store.registryRepository ? repositoryName(opts.runImage.store) : runName,
          base.digest,
        ),
        image: runName,
        mirrors,
      }),
      stack: { runImage: dropUndefined({ image: runName, mirrors }) },
    }),
    'lifecycle metadata',
  );
}

/** Step 7b, the image's labels: lifecycle, build and project metadata, plus the buildpacks' own labels. */
function imageLabels(
  ctx: ExportContext,
  lifecycleMetadata: LifecycleMetadata,
  launch: LaunchPlan,
): Record<string, string> {
  const { metadata } = ctx;
  const buildLabel: BuildMetadataLabel = {
    buildpacks: metadata.buildpacks.map((b) =>
      dropUndefined({ id: b.id, version: b.version, homepage: b.homepage }),
    ),
    launcher: { version: ctx.opts.launcherVersion ?? 'packfarm' },
    processes: launch.processes.map((p) =>
      dropUndefined({
        type: p.type,
        command: p.command,
        args: p.args,
        direct: p.direct,
        default: p.type === launch.defaultType ? true : undefined,
        buildpackID: p.buildpackId,
        'working-dir': p.workingDir,
      }),
    ),
    ...(metadata.bom.length ? { bom: metadata.bom } : {}),
  };
  const labels: Record<string, string> = {
    [Label.lifecycleMetadata]: canonicalJson(lifecycleMetadata),
    [Label.buildMetadata]: canonicalJson(buildLabel),
    [Label.projectMetadata]: canonicalJson(ctx.opts.projectMetadata ?? {}),
    [Label.rebasable]: 'true',
  };
  for (const l of metadata.labels) labels[l.key] = l.value;
  return labels;
}

/**
 * Step 8, save: into every output the run image's layers (referenced or mounted, never downloaded when the
 * registry has them), the new layers, the config and the manifest under each tag. A tag already naming this
 * manifest is left alone. Outcomes are reported for the first output.
 */
async function saveImage(
  ctx: ExportContext,
  produced: ProducedLayer[],
  assembled: ReturnType<typeof assembleImage>,
  direct: LayoutStore | undefined,
): Promise<{ tags: string[]; layers: ExportedLayer[]; baseLayers: ExportResult['baseLayers'] }> {
  const { opts, previous } = ctx;
  const limit = pLimit(opts.concurrency ?? 2);
  let layerResults: ExportedLayer[] = [];
  let baseLayers: ExportResult['baseLayers'] = [];
  const tags: string[] = [];
  for (const [oi, out] of opts.outputs.entries()) {
    const bl = await withExitCode(EXIT.EXPORT_ERROR, () =>
      transferBaseLayers(ctx.base, out.store, {
        concurrency: 3,
        ...(opts.signal ? { signal: opts.signal } : {}),
      }),
    );
    const results = await Promise.all(
      produced.map((p) =>
        limit(async (): Promise<ExportedLayer> => {
          const fromPrevious = previous?.byDiffId.get(p.diffId)?.digest === p.digest;
          if (direct && p.file) {
            const present = await direct.hasBlob(p.digest);
            if (!present) {
              await mkdir(dirname(direct.blobPath(p.digest)), { recursive: true });
              await rename(p.file, direct.blobPath(p.digest));
            }
            const outcome: LayerOutcome = !present ? 'added' : fromPrevious ? 'reused' : 'existing';
            return { name: p.planned.name, digest: p.digest, diffId: p.diffId, size: p.size, outcome };
          }
          const src = p.source;
          // A freshly written blob that the previous image has too (same bytes, e.g. the launcher) can be
          // mounted from there instead of uploaded.
          const mountFrom =
            src?.registryRepository ?? (fromPrevious ? previous?.store.registryRepository : undefined);
          const r = await withExitCode(EXIT.EXPORT_ERROR, () =>
            out.store.putBlob({
              digest: p.digest,
              size: p.size,
              open: () => (p.file ? createReadStream(p.file) : src!.getBlob(p.digest)),
              ...(mountFrom ? { mountFrom } : {}),
            }),
          );
          const outcome: LayerOutcome =
            r.outcome === 'exists'
              ? fromPrevious
                ? 'reused'
                : 'existing'
              : r.outcome === 'mounted'
                ? 'mounted'
                : 'added';
          return { name: p.planned.name, digest: p.digest, diffId: p.diffId, size: p.size, outcome };
        }),
      ),
    );
    if (oi === 0) {
      layerResults = results;
      baseLayers = bl;
      // Phases print nothing themselves: the CLI renders these (the lifecycle commands as the reference
      // exporter's "Adding layer …" and "Saving …" lines, which platforms grep for).
      for (const l of results)
        opts.onEvent?.({ type: 'layer', name: l.name, outcome: l.outcome, digest: l.digest, size: l.size });
      opts.onEvent?.({
        type: 'saving',
        name: out.names?.[0] ?? `${out.store.description}${out.tags[0] ? `:${out.tags[0]}` : ''}`,
      });
    }
    await out.store.putBlob({
      digest: assembled.configDigest,
      size: assembled.configBytes.length,
      open: () => Readable.from([assembled.configBytes]),
    });
    if (out.tags.length === 0) {
      // By digest only (a target of a multi-platform build): an image already there is not sent again.
      const present = await out.store.resolve(assembled.manifestDigest);
      if (!present)
        await withExitCode(EXIT.EXPORT_ERROR, () =>
          out.store.putManifest({ bytes: assembled.manifestBytes, mediaType: assembled.mediaType }),
        );
    }
    for (const [ti, tag] of out.tags.entries()) {
      // A rebuild that changed nothing leaves the tag as it is: not even the manifest is sent again.
      const current = await out.store.resolve(tag);
      if (current?.digest !== assembled.manifestDigest)
        await withExitCode(EXIT.EXPORT_ERROR, () =>
          out.store.putManifest({ bytes: assembled.manifestBytes, mediaType: assembled.mediaType, tag }),
        );
      tags.push(out.names?.[ti] ?? `${out.store.description}:${tag}`);
    }
  }
  return { tags, layers: layerResults, baseLayers };
}

/** A process's working dir in the image: relative ones are relative to the app dir (default: the app dir). */
function imageWorkingDir(dir: string | undefined, appDir: string): string {
  if (!dir) return appDir;
  return dir.startsWith('/') ? dir : `${appDir}/${dir}`.replace(/\/\.?$/, '');
}

function layoutOf(store: ImageStore): LayoutStore | undefined {
  const s = store as Partial<LayoutStore>;
  return s.kind === 'layout' && typeof s.makeTempDir === 'function' && typeof s.dir === 'string'
    ? (store as LayoutStore)
    : undefined;
}

/**
 * diffIDs of the launch+cache layers an export wrote (key `<buildpack id>:<layer>`): the cache export can reuse
 * them instead of tarring those layers again.
 */
export function knownCacheDiffIds(exported: Pick<ExportResult, 'lifecycleMetadata'>): Map<string, Digest> {
  return new Map(
    exported.lifecycleMetadata.buildpacks.flatMap((b) =>
      Object.entries(b.layers)
        .filter(([, l]) => l.cache && l.sha)
        .map(([name, l]) => [`${b.key}:${name}`, l.sha as Digest] as const),
    ),
  );
}

function platformOf(analyzed: AnalyzedFile | undefined): Platform | undefined {
  const t = runImageTargetOf(analyzed);
  if (!t?.os || !t.arch) return undefined;
  return { os: t.os, architecture: t.arch, ...(t.variant ? { variant: t.variant } : {}) };
}

async function readPrevious(prev: { store: ImageStore; target: string }): Promise<PreviousImage | undefined> {
  let img: BaseImage;
  try {
    img = await readBaseImage(prev.store, prev.target);
  } catch (err) {
    if (isPackfarmError(err, 'MANIFEST_UNKNOWN')) return undefined;
    throw err;
  }
  const raw = img.config.config?.Labels?.[Label.lifecycleMetadata];
  const source = `${prev.store.description}:${prev.target} label ${Label.lifecycleMetadata}`;
  const metadata = parseWith(LifecycleMetadataSchema, raw ? parseJson(raw, source) : {}, source);
  const byDiffId = new Map<string, { digest: Digest; size: number }>();
  img.config.rootfs.diff_ids.forEach((d, i) => {
    const l = img.manifest.layers[i];
    if (l) byDiffId.set(d, { digest: l.digest as Digest, size: l.size });
  });
  return { store: prev.store, metadata, byDiffId };
}
