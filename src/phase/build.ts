import { rm } from 'node:fs/promises';
import { StringDecoder } from 'node:string_decoder';
import { join } from 'node:path';
import { checkBuildpackApi } from '../buildpack/api.js';
import { LATEST_PLATFORM_API, checkPlatformApi } from '../platform/api.js';
import { apiAtLeast } from '../util/api-version.js';
import {
  type BuildpackBuildOutput,
  type BuildpackForBuild,
  type BuildpackPlanEntry,
  runBuildpackBuild,
} from '../buildpack/build.js';
import { type BuildpackStore, createBuildpackStore, isComposite } from '../buildpack/descriptor.js';
import { newBuildEnv } from '../buildpack/env.js';
import { type BomEntry, type ProcessDef, checkSlicePaths } from '../buildpack/launch.js';
import { copySbomFiles } from '../buildpack/sbom.js';
import type { Executor } from '../exec/executor.js';
import { createHostExecutor } from '../exec/host.js';
import { asPhaseError, EXIT, mapErrorKinds } from '../platform/exit-codes.js';
import { type AnalyzedFile, type GroupFile, type PlanFile, runImageTargetOf } from '../platform/files.js';
import {
  type BuildMetadata,
  type MetadataProcess,
  buildMetadataPath,
  writeBuildMetadata,
} from '../platform/metadata.js';
import { type RunImageTarget, completeTarget, targetEnv } from '../platform/target.js';
import { PackfarmError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';

/** What the build phase reports while it runs. Buildpack output arrives line by line. */
export type BuildEvent =
  | { type: 'buildpack-start'; id: string; version: string; api: string }
  | { type: 'buildpack-output'; id: string; stream: 'stdout' | 'stderr'; line: string }
  | { type: 'buildpack-end'; id: string; version: string };

export interface BuildOptions {
  appDir: string;
  layersDir: string;
  platformDir: string;
  /** `<buildpacks>/<escaped id>/<version>/` tree; or pass `buildpackStore`. */
  buildpacksDir?: string;
  buildpackStore?: BuildpackStore;
  /** Operator env dir (`<build-config>`, its `env/` applies to every buildpack); undefined = none. */
  buildConfigDir?: string | undefined;
  group: GroupFile;
  plan: PlanFile;
  /** analyzed.toml: its `[run-image.target]` becomes `CNB_TARGET_*`. */
  analyzed?: AnalyzedFile | undefined;
  /** Overrides the target taken from `analyzed`. */
  target?: RunImageTarget | undefined;
  /** Platform API of the run (default: the newest packfarm speaks). */
  platformApi?: string;
  /** `CNB_EXEC_ENV` (default `production`). */
  execEnv?: string;
  /** Runs bin/build (default: host child processes). */
  executor?: Executor;
  /**
   * The lifecycle's own environment; only allowlisted and path variables reach buildpacks. An executor with an
   * environment of its own (the oci executor: the build image's Env) replaces it.
   */
  hostEnv?: Readonly<Record<string, string | undefined>>;
  /** Where plan files for bin/build are written (must be visible to the executor); default: a temp dir. */
  planDir?: string;
  /** Write `<layers>/config/metadata.toml` (default true). */
  writeMetadata?: boolean;
  logger?: Logger;
  onEvent?: (event: BuildEvent) => void;
  signal?: AbortSignal;
}

export interface BuildResult {
  metadata: BuildMetadata;
  metadataPath: string | undefined;
  /** Per buildpack, in group order: its layers (types, metadata, exec.d), store, SBOMs, what it met. */
  buildpacks: BuildpackBuildOutput[];
}

/**
 * The build phase (platform.md "builder"): run every buildpack of the group in order, each seeing the
 * build layers of those before it, pass unmet plan entries on, and record processes, slices, labels and
 * buildpacks in metadata.toml for the exporter.
 *
 * Throws PackfarmError with the lifecycle exit code: 11/12 API, 51 buildpack failed, 52 other build errors.
 */
export function build(opts: BuildOptions): Promise<BuildResult> {
  return mapErrorKinds(() => runBuild(opts));
}

async function runBuild(opts: BuildOptions): Promise<BuildResult> {
  const platformApi = opts.platformApi ?? LATEST_PLATFORM_API;
  checkPlatformApi(platformApi);
  const log = opts.logger ?? silentLogger;
  const store =
    opts.buildpackStore ??
    (opts.buildpacksDir
      ? createBuildpackStore(opts.buildpacksDir)
      : missing('buildpacksDir or buildpackStore is required'));
  const execEnv = opts.execEnv ?? 'production';

  const buildpacks = await resolveBuildpacks(opts.group, store, log);

  try {
    // SBOMs of an earlier build in the same layers dir must not leak into this one.
    await rm(join(opts.layersDir, 'sbom'), { recursive: true, force: true });
  } catch (err) {
    throw asPhaseError(err, EXIT.BUILD_ERROR);
  }

  const target = opts.target ?? (await completeTarget(runImageTargetOf(opts.analyzed)));
  const tEnv = targetEnv(target);
  const executor = opts.executor ?? createHostExecutor();
  // An executor with an environment of its own (the build image's Env under oci) replaces the lifecycle's.
  const env = newBuildEnv(executor.baseEnv ?? opts.hostEnv ?? process.env);

  let plan = opts.plan.entries;
  const outputs: BuildpackBuildOutput[] = [];
  for (const bp of buildpacks) {
    opts.onEvent?.({ type: 'buildpack-start', id: bp.id, version: bp.version, api: bp.api });
    log.debug(`Running build for buildpack ${bp.id}@${bp.version}`);
    const stdout = lineSplitter((line) =>
      opts.onEvent?.({ type: 'buildpack-output', id: bp.id, stream: 'stdout', line }),
    );
    const stderr = lineSplitter((line) =>
      opts.onEvent?.({ type: 'buildpack-output', id: bp.id, stream: 'stderr', line }),
    );
    let out: BuildpackBuildOutput;
    try {
      out = await runBuildpackBuild({
        buildpack: bp,
        appDir: opts.appDir,
        layersDir: opts.layersDir,
        platformDir: opts.platformDir,
        buildConfigDir: opts.buildConfigDir,
        plan: planFor(plan, bp.id),
        env,
        targetEnv: tEnv,
        execEnv,
        executor,
        planParentDir: opts.planDir,
        onStdout: stdout.push,
        onStderr: stderr.push,
        signal: opts.signal,
        logger: log,
      });
    } catch (err) {
      throw asPhaseError(err, EXIT.BUILD_ERROR);
    } finally {
      stdout.end();
      stderr.end();
    }
    outputs.push(out);
    plan = withoutMet(plan, out.met);
    opts.onEvent?.({ type: 'buildpack-end', id: bp.id, version: bp.version });
    log.debug(`Finished running build for buildpack ${bp.id}@${bp.version}`);
  }

  try {
    // Slices name the app dir as buildpacks saw it.
    const metadata = assembleMetadata(opts.group, outputs, executor.paths?.app ?? opts.appDir, log);
    await copySbomFiles(
      opts.layersDir,
      outputs.flatMap((o) => o.sbom),
    );
    if (apiAtLeast(platformApi, '0.9')) await writeLegacyBom(opts.layersDir, outputs);
    else metadata.bom = legacyBom(outputs, 'launch');
    let metadataPath: string | undefined;
    if (opts.writeMetadata !== false) {
      metadataPath = buildMetadataPath(opts.layersDir);
      await writeBuildMetadata(metadataPath, metadata, platformApi);
    }
    return { metadata, metadataPath, buildpacks: outputs };
  } catch (err) {
    throw asPhaseError(err, EXIT.BUILD_ERROR);
  }
}

/** Look up every group member; the group must hold component buildpacks with supported APIs. */
async function resolveBuildpacks(
  group: GroupFile,
  store: BuildpackStore,
  log: Logger,
): Promise<BuildpackForBuild[]> {
  const out: BuildpackForBuild[] = [];
  for (const g of group.group) {
    let d: Awaited<ReturnType<BuildpackStore['lookup']>>;
    try {
      d = await store.lookup(g.id, g.version);
    } catch (err) {
      throw asPhaseError(err, EXIT.BUILD_ERROR);
    }
    checkBuildpackApi(d.api, `buildpack ${d.id}@${d.version} (${d.path})`);
    if (isComposite(d)) {
      throw new PackfarmError(
        'COMPOSITE_IN_GROUP',
        `group.toml lists ${d.id}@${d.version}, a composite buildpack (${d.path} has [[order]]); a group holds component buildpacks only`,
        { exitCode: EXIT.BUILD_ERROR, hint: 'run the detector to resolve composite buildpacks into a group' },
      );
    }
    if (g.api !== d.api) {
      log.warn(
        `group.toml says ${g.id}@${g.version} has Buildpack API ${g.api}, its buildpack.toml says ${d.api}; using ${d.api}`,
      );
    }
    out.push({
      id: d.id,
      version: d.version,
      api: d.api,
      dir: d.dir,
      clearEnv: d.clearEnv,
      sbomFormats: d.sbomFormats,
    });
  }
  return out;
}

/**
 * The Buildpack Plan of one buildpack: every require of every plan entry it is a provider of (one entry per
 * require, so several entries may share a name).
 */
export function planFor(entries: PlanFile['entries'], buildpackId: string): BuildpackPlanEntry[] {
  const out: BuildpackPlanEntry[] = [];
  for (const e of entries) {
    if (!e.providers.some((p) => p.id === buildpackId && !p.extension)) continue;
    for (const r of e.requires) out.push({ name: r.name, metadata: r.metadata });
  }
  return out;
}

/**
 * Drop plan entries a buildpack met, so buildpacks after it never see them. Unmet entries stay and reach
 * the next buildpack that provided their name.
 */
export function withoutMet(entries: PlanFile['entries'], met: readonly string[]): PlanFile['entries'] {
  if (met.length === 0) return entries;
  const names = new Set(met);
  return entries.filter((e) => !e.requires.some((r) => names.has(r.name)));
}

export interface MergedProcesses {
  /** Sorted by type, so metadata.toml does not depend on map order. */
  processes: MetadataProcess[];
  defaultType: string | undefined;
  warnings: string[];
}

/**
 * Merge processes across buildpacks in build order: a later definition of a type replaces the earlier one;
 * the last `default = true` wins; a later non-default definition of the default type clears the default.
 */
export function mergeProcesses(
  perBuildpack: readonly { buildpackId: string; processes: readonly ProcessDef[] }[],
): MergedProcesses {
  const byType = new Map<string, MetadataProcess>();
  let defaultType: string | undefined;
  const warnings: string[] = [];
  for (const { buildpackId, processes } of perBuildpack) {
    for (const p of processes) {
      if (p.default) defaultType = p.type;
      else if (p.type === defaultType) {
        defaultType = undefined;
        warnings.push(
          `buildpack ${buildpackId} redefines the default process type "${p.type}" without default = true; the image has no default process now`,
        );
      }
      byType.set(p.type, {
        type: p.type,
        command: p.command,
        args: p.args,
        direct: p.direct,
        workingDir: p.workingDir,
        execEnv: p.execEnv,
        buildpackId,
      });
    }
  }
  const processes = [...byType.values()].sort((a, b) => (a.type < b.type ? -1 : a.type > b.type ? 1 : 0));
  return { processes, defaultType, warnings };
}

function assembleMetadata(
  group: GroupFile,
  outputs: readonly BuildpackBuildOutput[],
  appDir: string,
  log: Logger,
): BuildMetadata {
  const merged = mergeProcesses(
    outputs.map((o) => ({ buildpackId: o.buildpack.id, processes: o.launch.processes })),
  );
  for (const w of merged.warnings) log.warn(w);
  for (const o of outputs) {
    const problem = checkSlicePaths(o.launch.slices, appDir);
    if (problem) {
      throw new PackfarmError(
        'INVALID_LAUNCH_TOML',
        `${join(o.layersDir, 'launch.toml')} (buildpack ${o.buildpack.id}): ${problem}`,
        { exitCode: EXIT.BUILD_ERROR },
      );
    }
  }
  return {
    buildpacks: group.group.map((g) => ({ id: g.id, version: g.version, api: g.api, homepage: g.homepage })),
    extensions: (group['group-extensions'] ?? []).map((g) => ({
      id: g.id,
      version: g.version,
      api: g.api,
      homepage: g.homepage,
    })),
    processes: merged.processes,
    slices: outputs.flatMap((o) => o.launch.slices),
    labels: outputs.flatMap((o) => o.launch.labels),
    buildpackDefaultProcessType: merged.defaultType,
    bom: [],
  };
}

interface LegacyBomEntry extends BomEntry {
  buildpack: { id: string; version: string };
}

function legacyBom(outputs: readonly BuildpackBuildOutput[], kind: 'launch' | 'build'): LegacyBomEntry[] {
  return outputs.flatMap((o) =>
    (kind === 'launch' ? o.launch.bom : o.build.bom).map((b) => ({
      ...b,
      buildpack: { id: o.buildpack.id, version: o.buildpack.version },
    })),
  );
}

/** Deprecated `[[bom]]` entries go to `<layers>/sbom/{launch,build}/sbom.legacy.json` (Platform API 0.9+). */
async function writeLegacyBom(layersDir: string, outputs: readonly BuildpackBuildOutput[]): Promise<void> {
  for (const kind of ['launch', 'build'] as const) {
    const entries = legacyBom(outputs, kind);
    if (entries.length === 0) continue;
    await writeFileAtomic(join(layersDir, 'sbom', kind, 'sbom.legacy.json'), JSON.stringify(entries));
  }
}

/** Turn a stream of byte chunks into whole UTF-8 lines; `end` flushes a last line without newline. */
function lineSplitter(emit: (line: string) => void): { push: (chunk: Buffer) => void; end: () => void } {
  const decoder = new StringDecoder('utf8');
  let pending = '';
  const drain = () => {
    let nl = pending.indexOf('\n');
    while (nl >= 0) {
      emit(pending.slice(0, nl).replace(/\r$/, ''));
      pending = pending.slice(nl + 1);
      nl = pending.indexOf('\n');
    }
  };
  return {
    push(chunk) {
      pending += decoder.write(chunk);
      drain();
    },
    end() {
      pending += decoder.end();
      drain();
      if (pending !== '') emit(pending);
      pending = '';
    },
  };
}

function missing(what: string): never {
  throw new Error(what);
}
