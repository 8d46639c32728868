import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rename, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import pLimit from 'p-limit';
import {
  type LayerOutput,
  type LayerResult,
  type MemoryEntry,
  writeLayer,
  writeLayerFromEntries,
} from '../archive/index.js';
import { LATEST_PLATFORM_API, checkPlatformApi } from '../platform/api.js';
import {
  type BuildpackLayer,
  buildpackLayersDir,
  escapeId,
  readBuildpackLayers,
} from '../buildpack/layers.js';
import { PROCESS_TYPE_PATTERN } from '../buildpack/launch.js';
import { type AppendedLayer, assembleImage, transferBaseLayers } from '../image/assemble.js';
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
import { parseReference } from '../oci/reference.js';
import { EXIT } from '../platform/exit-codes.js';
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
import { parseToml } from '../util/toml.js';
import { parseJson, parseWith } from '../util/validate.js';
import { assignSlices } from './export-slices.js';
import { type HostPaths, type PathRewriter, hostPathRewriter, processesToImagePaths } from './host-paths.js';

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
  | { type: 'warning'; message: string };

export type LayerOutcome = 'added' | 'reused' | 'mounted';

export interface ExportOptions {
  layersDir: string;
  appDir: string;
  group: GroupFile;
  analyzed?: AnalyzedFile | undefined;
  /** metadata.toml; default: read `<layers>/config/metadata.toml`. */
  metadata?: BuildMetadata;
  /** The run image: a store, a tag or digest in it, and the name recorded in labels. */
  runImage: { store: ImageStore; target: string; name?: string; mirrors?: string[] };
  /** Target platform (default: analyzed.toml's run-image target, else linux/amd64). */
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
  /** Layers written at once (default 2). */
  concurrency?: number;
  /** Where layer blobs are written before they are put (default: a temp dir under os.tmpdir()). */
  tmpDir?: string;
  /** Write report.toml here. */
  reportPath?: string;
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

interface PlannedLayer {
  /** Key for metadata and logs: `bp:<id>:<layer>`, `app`, `app-slice-N`, `sbom`, `launcher`, `process-types`, `config`. */
  name: string;
  createdBy: string;
  /** Produce the blob at `out`; with `raw`, an uncompressed tar (used to learn the diffID cheaply). */
  write?: (out: LayerOutput, raw?: boolean) => Promise<LayerResult>;
  /**
   * A directory layer that may be unchanged since the previous image: its diffID is learnt from a plain tar
   * first (no gzip), and when the previous image has that diffID its blob is reused without compressing.
   */
  probe?: boolean;
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

function dropUndefined<T extends Record<string, unknown>>(o: T): T {
  return Object.fromEntries(Object.entries(o).filter(([, v]) => v !== undefined)) as T;
}

/**
 * The export phase (platform.md "exporter"): the run image plus the build's launch layers, SBOM, app, launcher,
 * process types and config as a new image in every output, with the lifecycle's labels. Layers are written
 * once each (in parallel), as files, then put into each output; outputs that have a blob skip it.
 */
export async function exportImage(opts: ExportOptions): Promise<ExportResult> {
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
  const uid = opts.uid ?? 1000;
  const gid = opts.gid ?? 1000;
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

  const base = await exportError(() => readBaseImage(opts.runImage.store, opts.runImage.target, platform));
  const baseLabels = base.config.config?.Labels ?? {};
  const shell = opts.shell ?? baseLabels[SHELL_LABEL] !== 'false';

  // ---- plan the layers, in image order -------------------------------------------------------------------
  const planned: PlannedLayer[] = [];
  const bpMeta: LifecycleMetadata['buildpacks'] = [];
  const launchLayers: Array<LaunchLayerPaths & { layer: BuildpackLayer }> = [];
  const previous = opts.previousImage ? await readPrevious(opts.previousImage) : undefined;

  for (const bp of opts.group.group) {
    const dir = buildpackLayersDir(opts.layersDir, bp.id);
    const layers = await exportError(() => readBuildpackLayers(dir, { buildpackApi: bp.api }));
    const entry: LifecycleMetadata['buildpacks'][number] = { key: bp.id, version: bp.version, layers: {} };
    const store = await readStoreToml(join(dir, 'store.toml'));
    if (store) entry.store = { metadata: store };
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
        launchLayers.push({ buildpackId: bp.id, name: layer.name, hostPath: layer.path, imagePath, layer });
        planned.push({
          name,
          createdBy,
          probe: true,
          write: (out, raw) =>
            writeLayer({
              ...(raw ? { compression: 'none' as const } : {}),
              dir: layer.path,
              prefix: imagePath.slice(1),
              uid,
              gid,
              mtime: created,
              out,
              ...(opts.signal ? { signal: opts.signal } : {}),
            }),
        });
        entry.layers[layer.name] = { sha: '', ...meta };
      } else {
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
        warn(
          `launch layer ${bp.id}:${layer.name} is reused from the previous image without its files: its env and exec.d are not applied (spec/launch.md)`,
        );
        planned.push({
          name,
          createdBy,
          existing: { store: previous.store, digest: found.digest, size: found.size, diffId: sha as Digest },
        });
        entry.layers[layer.name] = { sha, ...meta };
      }
    }
    bpMeta.push(entry);
  }

  const sbomDir = join(opts.layersDir, 'sbom', 'launch');
  if (await isDir(sbomDir)) {
    planned.push({
      name: 'sbom',
      createdBy: 'Layer: SBOM',
      probe: true,
      write: (out, raw) =>
        writeLayer({
          ...(raw ? { compression: 'none' as const } : {}),
          dir: sbomDir,
          prefix: `${imgLayers.slice(1)}/sbom/launch`,
          uid,
          gid,
          mtime: created,
          out,
          ...(opts.signal ? { signal: opts.signal } : {}),
        }),
    });
  }

  const slices = metadata.slices.filter((s) => s.paths.length > 0);
  const assignment = await assignSlices(opts.appDir, slices);
  const appLayerNames: string[] = [];
  for (let i = 0; i <= slices.length; i++) {
    const name = i < slices.length ? `app-slice-${i}` : 'app';
    const index = i;
    appLayerNames.push(name);
    planned.push({
      name,
      createdBy:
        i < slices.length ? `Layer: 'slice-${i + 1}', Created by lifecycle:exporter` : 'Layer: Application',
      probe: true,
      write: (out, raw) =>
        writeLayer({
          ...(raw ? { compression: 'none' as const } : {}),
          dir: opts.appDir,
          prefix: imgApp.slice(1),
          uid,
          gid,
          mtime: created,
          out,
          filter:
            slices.length === 0 ? undefined : (rel, st) => st.isDirectory() || assignment.get(rel) === index,
          ...(opts.signal ? { signal: opts.signal } : {}),
        }),
    });
  }

  // ---- processes, env, launcher ----------------------------------------------------------------------------
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
  const baseEnv = envFromConfig(base.config.config?.Env);
  // The launch env for every process, or for one process type; values name in-image paths.
  const launchEnv = async (processType?: string) => {
    const env = await computeLaunchEnv({
      base: baseEnv,
      layers: launchLayers,
      buildpackOrder: order,
      ...(processType !== undefined ? { processType } : {}),
    });
    return new Map([...env].map(([k, v]) => [k, rewrite(v)] as const));
  };
  const general = await launchEnv();
  const envOf = new Map<string, Map<string, string>>();
  const scriptEntries: MemoryEntry[] = [];
  let anyExecD = false;
  for (const p of processes) {
    const own = await launchEnv(p.type);
    envOf.set(p.type, own);
    const execD: string[] = [];
    for (const bp of order) {
      for (const l of launchLayers
        .filter((x) => x.buildpackId === bp)
        .sort((a, b) => (a.name < b.name ? -1 : 1))) {
        for (const n of l.layer.execD.all) execD.push(`${l.imagePath}/exec.d/${n}`);
        for (const n of l.layer.execD.byProcess[p.type] ?? [])
          execD.push(`${l.imagePath}/exec.d/${p.type}/${n}`);
      }
    }
    if (execD.length > 0) anyExecD = true;
    scriptEntries.push({
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
  if (!shell) {
    if (anyExecD) warn('the run image has no /bin/sh: exec.d programs of the launch layers will not run');
    if (processes.length > 1)
      warn(
        'the run image has no /bin/sh: only the default process can start (no /cnb/process scripts, no CNB_PROCESS_TYPE)',
      );
  }

  const basePath = general.get('PATH') ?? '';
  const cnbEnv = new Map(general);
  cnbEnv.set('PATH', [PROCESS_DIR, '/cnb/lifecycle', basePath].filter(Boolean).join(':'));
  cnbEnv.set('CNB_PLATFORM_API', platformApi);
  cnbEnv.set('CNB_LAYERS_DIR', imgLayers);
  cnbEnv.set('CNB_APP_DIR', imgApp);
  cnbEnv.set('CNB_DEPRECATION_MODE', 'quiet');

  const defaultProc = processes.find((p) => p.type === defaultType);
  let entrypoint: string[] | undefined;
  let cmd: string[] | undefined;
  let workingDir = imgApp;
  let env = cnbEnv;
  if (shell) {
    entrypoint = [LAUNCHER_PATH];
  } else if (defaultProc) {
    // No shell: the default process is resolved into the config, its own env included.
    const own = envOf.get(defaultProc.type) ?? general;
    env = new Map(cnbEnv);
    for (const [k, v] of envDifference(general, own))
      env.set(k, k === 'PATH' ? `${PROCESS_DIR}:/cnb/lifecycle:${v}` : v);
    entrypoint = defaultProc.command;
    cmd = defaultProc.args.length > 0 ? defaultProc.args : undefined;
    workingDir = imageWorkingDir(defaultProc.workingDir, imgApp);
  } else {
    warn('the run image has no /bin/sh and there is no default process: the image has no entrypoint');
  }

  planned.push({
    name: 'launcher',
    createdBy: 'Layer: Launcher',
    write: (out) =>
      writeLayerFromEntries(
        [
          {
            path: LAUNCHER_PATH.slice(1),
            type: 'file',
            mode: 0o755,
            content: launcherScript({
              defaultProcess: defaultType,
              processTypes: processes.map((p) => p.type),
            }),
          },
        ],
        { out, uid: 0, gid: 0, mtime: created },
      ),
  });
  planned.push({
    name: 'process-types',
    createdBy: 'Layer: Process Types',
    write: (out) =>
      writeLayerFromEntries([{ path: PROCESS_DIR.slice(1), type: 'dir', mode: 0o755 }, ...scriptEntries], {
        out,
        uid: 0,
        gid: 0,
        mtime: created,
      }),
  });
  const metadataToml = encodeBuildMetadata(metadata, platformApi);
  planned.push({
    name: 'config',
    createdBy: 'Layer: Config',
    write: (out) =>
      writeLayerFromEntries([{ path: 'cnb/config/metadata.toml', type: 'file', content: metadataToml }], {
        out,
        uid: 0,
        gid: 0,
        mtime: created,
      }),
  });

  // ---- write every layer once, in parallel --------------------------------------------------------------
  // With one OCI layout as the only output, layers are written inside the layout directory and renamed into
  // blobs/ when new: each blob is written exactly once instead of being copied from a temp file.
  const direct = opts.outputs.length === 1 && !opts.tmpDir ? layoutOf(opts.outputs[0]!.store) : undefined;
  const tmp = await mkdtemp(join(opts.tmpDir ?? direct?.dir ?? tmpdir(), '.packfarm-export-'));
  try {
    const limit = pLimit(opts.concurrency ?? 2);
    const produced: ProducedLayer[] = await Promise.all(
      planned.map((p, i) =>
        limit(async (): Promise<ProducedLayer> => {
          opts.signal?.throwIfAborted();
          if (p.existing) return { planned: p, ...p.existing, source: p.existing.store };
          if (p.probe && previous && previous.byDiffId.size > 0) {
            const r = await exportError(() => p.write!(discardSink(), true));
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
          const r = await exportError(() => p.write!(file));
          return { planned: p, digest: r.digest, size: r.size, diffId: r.diffId, file };
        }),
      ),
    );
    const shaOf = (name: string) => produced.find((p) => p.planned.name === name)?.diffId ?? '';
    for (const p of produced) {
      const m = /^bp:(.+):([^:]+)$/.exec(p.planned.name);
      if (!m) continue;
      const entry = bpMeta.find((b) => b.key === m[1]);
      const layer = entry?.layers[m[2]!];
      if (layer) layer.sha = p.diffId;
    }

    // ---- labels and config --------------------------------------------------------------------------------
    const runName = opts.runImage.name ?? `${opts.runImage.store.description}:${opts.runImage.target}`;
    const lifecycleMetadata: LifecycleMetadata = parseWith(
      LifecycleMetadataSchema,
      dropUndefined({
        app: appLayerNames.map((n) => ({ sha: shaOf(n) })),
        sbom: planned.some((p) => p.name === 'sbom') ? { sha: shaOf('sbom') } : undefined,
        buildpacks: bpMeta,
        config: { sha: shaOf('config') },
        launcher: { sha: shaOf('launcher') },
        'process-types': { sha: shaOf('process-types') },
        runImage: dropUndefined({
          topLayer: base.config.rootfs.diff_ids.at(-1) ?? '',
          reference: digestReference(runName, base.digest),
          image: runName,
          mirrors: opts.runImage.mirrors?.length ? opts.runImage.mirrors : undefined,
        }),
        stack: {
          runImage: dropUndefined({
            image: runName,
            mirrors: opts.runImage.mirrors?.length ? opts.runImage.mirrors : undefined,
          }),
        },
      }),
      'lifecycle metadata',
    );
    const buildLabel: BuildMetadataLabel = {
      buildpacks: metadata.buildpacks.map((b) =>
        dropUndefined({ id: b.id, version: b.version, homepage: b.homepage }),
      ),
      launcher: { version: opts.launcherVersion ?? 'packfarm' },
      processes: processes.map((p) =>
        dropUndefined({
          type: p.type,
          command: p.command,
          args: p.args,
          direct: p.direct,
          default: p.type === defaultType ? true : undefined,
          buildpackID: p.buildpackId,
          'working-dir': p.workingDir,
        }),
      ),
      ...(metadata.bom.length ? { bom: metadata.bom } : {}),
    };
    const labels: Record<string, string> = {
      [Label.lifecycleMetadata]: canonicalJson(lifecycleMetadata),
      [Label.buildMetadata]: canonicalJson(buildLabel),
      [Label.projectMetadata]: canonicalJson(opts.projectMetadata ?? {}),
      [Label.rebasable]: 'true',
    };
    for (const l of metadata.labels) labels[l.key] = l.value;

    const appended: AppendedLayer[] = produced.map((p) => ({
      digest: p.digest,
      size: p.size,
      diffId: p.diffId,
      createdBy: p.planned.createdBy,
    }));
    const assembled = assembleImage({
      base,
      layers: appended,
      created,
      ...(platform ? { platform: { ...base.platform, ...platform } } : {}),
      config: {
        Env: envToConfig(env),
        Entrypoint: entrypoint,
        Cmd: cmd,
        WorkingDir: workingDir,
        Labels: labels,
      },
    });

    // ---- put into every output -----------------------------------------------------------------------------
    let layerResults: ExportedLayer[] = [];
    let baseLayers: ExportResult['baseLayers'] = [];
    const tags: string[] = [];
    for (const [oi, out] of opts.outputs.entries()) {
      const bl = await exportError(() =>
        transferBaseLayers(base, out.store, {
          concurrency: 3,
          ...(opts.signal ? { signal: opts.signal } : {}),
        }),
      );
      const results = await Promise.all(
        produced.map((p) =>
          limit(async (): Promise<ExportedLayer> => {
            if (direct && p.file) {
              const reused = await direct.hasBlob(p.digest);
              if (!reused) {
                await mkdir(dirname(direct.blobPath(p.digest)), { recursive: true });
                await rename(p.file, direct.blobPath(p.digest));
              }
              const outcome: LayerOutcome = reused ? 'reused' : 'added';
              return { name: p.planned.name, digest: p.digest, diffId: p.diffId, size: p.size, outcome };
            }
            const src = p.source;
            // A freshly written blob that the previous image has too (same bytes, e.g. the launcher) can be
            // mounted from there instead of uploaded.
            const mountFrom =
              src?.registryRepository ??
              (previous?.byDiffId.get(p.diffId)?.digest === p.digest
                ? previous.store.registryRepository
                : undefined);
            const r = await exportError(() =>
              out.store.putBlob({
                digest: p.digest,
                size: p.size,
                open: () => (p.file ? createReadStream(p.file) : src!.getBlob(p.digest)),
                ...(mountFrom ? { mountFrom } : {}),
              }),
            );
            const outcome: LayerOutcome =
              r.outcome === 'exists' ? 'reused' : r.outcome === 'mounted' ? 'mounted' : 'added';
            return { name: p.planned.name, digest: p.digest, diffId: p.diffId, size: p.size, outcome };
          }),
        ),
      );
      await out.store.putBlob({
        digest: assembled.configDigest,
        size: assembled.configBytes.length,
        open: () => bufferReadable(assembled.configBytes),
      });
      if (out.tags.length === 0) {
        await out.store.putManifest({ bytes: assembled.manifestBytes, mediaType: assembled.mediaType });
      }
      for (const [ti, tag] of out.tags.entries()) {
        // A rebuild that changed nothing leaves the tag as it is: not even the manifest is sent again.
        const current = await out.store.resolve(tag).catch(() => undefined);
        if (current?.digest !== assembled.manifestDigest)
          await exportError(() =>
            out.store.putManifest({ bytes: assembled.manifestBytes, mediaType: assembled.mediaType, tag }),
          );
        tags.push(out.names?.[ti] ?? `${out.store.description}:${tag}`);
      }
      if (oi === 0) {
        layerResults = results;
        baseLayers = bl;
        for (const l of results) {
          log.info(`${l.outcome === 'added' ? 'Adding' : 'Reusing'} layer '${l.name.replace(/^bp:/, '')}'`);
          opts.onEvent?.({ type: 'layer', name: l.name, outcome: l.outcome, digest: l.digest, size: l.size });
        }
      }
    }
    const report: ExportReport = {
      image: { tags, digest: assembled.manifestDigest, manifestSize: assembled.manifestBytes.length },
    };
    if (opts.reportPath) await writeReport(opts.reportPath, report);
    return {
      digest: assembled.manifestDigest,
      mediaType: assembled.mediaType,
      manifestSize: assembled.manifestBytes.length,
      manifestBytes: assembled.manifestBytes,
      configBytes: assembled.configBytes,
      tags,
      layers: layerResults,
      baseLayers,
      lifecycleMetadata,
      report,
      warnings,
    };
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
}

/** A process's working dir in the image: relative ones are relative to the app dir (default: the app dir). */
function imageWorkingDir(dir: string | undefined, appDir: string): string {
  if (!dir) return appDir;
  return dir.startsWith('/') ? dir : `${appDir}/${dir}`.replace(/\/\.?$/, '');
}

function layoutOf(store: ImageStore): LayoutStore | undefined {
  const s = store as Partial<LayoutStore>;
  return s.kind === 'layout' && typeof s.blobPath === 'function' && typeof s.dir === 'string'
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

/** A sink for a tar whose digests are all we want. */
function discardSink(): Writable {
  return new Writable({
    write(_chunk, _enc, cb) {
      cb();
    },
  });
}

function bufferReadable(b: Buffer): Readable {
  return Readable.from([b]);
}

function platformOf(analyzed: AnalyzedFile | undefined): Platform | undefined {
  const t = runImageTargetOf(analyzed);
  if (!t?.os || !t.arch) return undefined;
  return { os: t.os, architecture: t.arch, ...(t.variant ? { variant: t.variant } : {}) };
}

/** `registry/repo@digest` for a registry name; `name@digest` for anything else (a layout path). */
function digestReference(name: string, digest: Digest): string {
  try {
    const ref = parseReference(name);
    return `${ref.registry}/${ref.repository}@${digest}`;
  } catch {
    return `${name.replace(/:[^/:@]*$/, '')}@${digest}`;
  }
}

async function isDir(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isDirectory() ?? false;
}

async function readStoreToml(path: string): Promise<Record<string, unknown> | undefined> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return undefined;
  }
  const doc = parseToml(text, path);
  const m = doc.metadata;
  return m && typeof m === 'object' ? (m as Record<string, unknown>) : {};
}

async function readPrevious(prev: { store: ImageStore; target: string }): Promise<
  | {
      store: ImageStore;
      metadata: LifecycleMetadata;
      byDiffId: Map<string, { digest: Digest; size: number }>;
    }
  | undefined
> {
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

/** Errors of the export phase carry the lifecycle's export exit code unless they already have one. */
async function exportError<T>(fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (err instanceof PackfarmError) {
      if (err.exitCode === 1) {
        throw new PackfarmError(err.code, err.message, {
          ...(err.hint ? { hint: err.hint } : {}),
          exitCode: EXIT.EXPORT_ERROR,
          cause: err,
        });
      }
      throw err;
    }
    throw err;
  }
}
