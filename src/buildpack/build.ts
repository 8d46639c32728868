import { mkdir, mkdtemp, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Executor } from '../exec/executor.js';
import { handOver, toExecutorView } from '../exec/view.js';
import { PackfarmError } from '../util/errors.js';
import { readFileIfExists, writeFileAtomic } from '../util/fs.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { parseToml, stringifyToml } from '../util/toml.js';
import { apiAtLeast } from '../util/api-version.js';
import { type BuildToml, parseBuildToml } from './build-toml.js';
import {
  type EnvVars,
  addBuildLayers,
  applyBuildConfigEnv,
  applyUserEnv,
  envToRecord,
  readEnvDir,
} from './env.js';
import { type LaunchToml, parseLaunchToml } from './launch.js';
import {
  type BuildpackLayer,
  buildpackLayersDir,
  escapeId,
  findReservedLayerDirs,
  ignoreUntypedLayers,
  nonExecutableExecD,
  readBuildpackLayers,
} from './layers.js';
import { type SbomPlacement, collectSbomFiles } from './sbom.js';
import { type StoreToml, readStoreToml } from './store.js';

/** What the build step needs to know about a component buildpack (from its buildpack.toml). */
export interface BuildpackForBuild {
  id: string;
  version: string;
  /** The buildpack's own API version: every gate below asks it, not the group's. */
  api: string;
  /** Root directory holding `bin/build`. */
  dir: string;
  clearEnv: boolean;
  sbomFormats: readonly string[];
}

/** One entry of a Buildpack Plan (`[[entries]]` in the file given to bin/build). */
export interface BuildpackPlanEntry {
  name: string;
  metadata?: Record<string, unknown> | undefined;
}

export interface RunBuildOptions {
  buildpack: BuildpackForBuild;
  appDir: string;
  layersDir: string;
  platformDir: string;
  /** Operator env (`<build-config>/env/`), applied after everything else; undefined = none. */
  buildConfigDir?: string | undefined;
  /** The entries this buildpack is to provide. */
  plan: readonly BuildpackPlanEntry[];
  /**
   * The build environment so far (allowlisted host env + earlier buildpacks' build layers). The layers this
   * buildpack marks `build = true` are added to it afterwards, for the buildpacks that follow.
   */
  env: EnvVars;
  /** `CNB_TARGET_*` values describing the run image (passed to Buildpack API 0.10+). */
  targetEnv: Readonly<Record<string, string>>;
  /** `CNB_EXEC_ENV` (passed to Buildpack API 0.12+ when set). */
  execEnv?: string | undefined;
  executor: Executor;
  /**
   * Directory for the plan file (a host path under one of the executor's mounts). Default: a fresh dir in the
   * executor's scratch space, or in the OS temp dir for the host executor.
   */
  planParentDir?: string | undefined;
  onStdout?: (chunk: Buffer) => void;
  onStderr?: (chunk: Buffer) => void;
  signal?: AbortSignal | undefined;
  logger?: Logger;
}

/** What one buildpack produced, validated against its Buildpack API. */
export interface BuildpackBuildOutput {
  buildpack: BuildpackForBuild;
  layersDir: string;
  layers: BuildpackLayer[];
  /** Layers with all types false whose dirs were renamed to `<layer>.ignore`. */
  ignoredLayers: string[];
  launch: LaunchToml;
  build: BuildToml;
  store: StoreToml | undefined;
  sbom: SbomPlacement[];
  /** Names of the plan entries this buildpack met (its plan minus `[[unmet]]`). */
  met: string[];
}

/**
 * Run one buildpack's `bin/build` and read back what it wrote (buildpack.md "Build", "Phase #5").
 *
 * Errors: a non-zero exit (or a bin/build that cannot run) is a `buildpack-failed` error (the build phase
 * exits 51); invalid output files are errors naming the file and the field, which the build phase reports as
 * lifecycle build errors (exit 52).
 */
export async function runBuildpackBuild(opts: RunBuildOptions): Promise<BuildpackBuildOutput> {
  const bp = opts.buildpack;
  const log = opts.logger ?? silentLogger;
  const who = `buildpack ${bp.id}@${bp.version}`;
  const bpLayersDir = buildpackLayersDir(opts.layersDir, bp.id);
  await mkdir(bpLayersDir, { recursive: true });
  // The build user owns its layers dir, restored layers included (as after the reference restorer).
  await handOver(opts.executor, bpLayersDir, { recursive: true });

  const executable = join(bp.dir, 'bin', 'build');
  await checkExecutable(executable, who);

  const planRoot =
    opts.planParentDir ??
    (await mkdtemp(join(opts.executor.hostPaths?.scratch ?? tmpdir(), `packfarm-plan-${escapeId(bp.id)}-`)));
  const planPath = join(planRoot, escapeId(bp.id), 'plan.toml');
  try {
    await writeFileAtomic(planPath, encodeBuildpackPlan(opts.plan));
    await handOver(opts.executor, planRoot, { recursive: true });
    const env = await buildProcessEnv(opts, { bpLayersDir, planPath });
    const result = await Promise.resolve()
      .then(() =>
        opts.executor.run(
          toExecutorView(opts.executor, {
            argv: [executable, bpLayersDir, opts.platformDir, planPath],
            cwd: opts.appDir,
            env,
            ...(opts.onStdout ? { onStdout: opts.onStdout } : {}),
            ...(opts.onStderr ? { onStderr: opts.onStderr } : {}),
            ...(opts.signal ? { signal: opts.signal } : {}),
          }),
        ),
      )
      .catch((err: unknown) => {
        // Could not start at all (bad #! line, vanished file …): still the buildpack's fault, exit 51.
        const e = err as PackfarmError;
        throw new PackfarmError('BUILDPACK_BUILD_FAILED', `${who}: ${e.message}`, {
          kind: 'buildpack-failed',
          ...(e.hint ? { hint: e.hint } : {}),
          cause: err,
        });
      });
    if (result.exitCode !== 0) {
      throw new PackfarmError(
        'BUILDPACK_BUILD_FAILED',
        `${who}: bin/build ${result.signal ? `was killed by ${result.signal}` : `exited with status ${result.exitCode}`}`,
        { kind: 'buildpack-failed', hint: 'see the buildpack output above' },
      );
    }
  } finally {
    if (opts.planParentDir === undefined) await rm(planRoot, { recursive: true, force: true });
    else await rm(join(planRoot, escapeId(bp.id)), { recursive: true, force: true });
  }

  // Reading the outputs fails as a plain error; the build phase reports it as a build error (exit 52).
  const found = await readBuildpackLayers(bpLayersDir, { buildpackApi: bp.api });
  const ignoredLayers = await ignoreUntypedLayers(found);
  const layers = found.map((l) => (ignoredLayers.includes(l.name) ? { ...l, hasDir: false } : l));
  for (const name of await findReservedLayerDirs(bpLayersDir)) {
    log.warn(`${who}: ${join(bpLayersDir, name)}: "${name}" is a reserved name and is not a layer`);
  }
  for (const l of layers) {
    if (!l.types.launch) continue;
    const bad = await nonExecutableExecD(l);
    if (bad.length)
      log.warn(`${who}: exec.d files are not executable and will fail at launch: ${bad.join(', ')}`);
  }

  // Expose this buildpack's build layers to the buildpacks after it.
  await addBuildLayers(
    opts.env,
    layers.filter((l) => l.types.build).map((l) => l.path),
  );

  const planNames = [...new Set(opts.plan.map((e) => e.name))];
  const build = await readOptional(join(bpLayersDir, 'build.toml'), (text, source) =>
    parseBuildToml(text, { source, buildpackId: bp.id, planNames }),
  );
  const sbom = await collectSbomFiles({
    bpLayersDir,
    buildpackId: bp.id,
    sbomFormats: bp.sbomFormats,
    layers: new Map(layers.map((l) => [l.name, l.types])),
    logger: log,
  });
  const launch = await readOptional(join(bpLayersDir, 'launch.toml'), (text, source) =>
    parseLaunchToml(text, { source, buildpackId: bp.id, buildpackApi: bp.api, logger: log }),
  );
  const store = await readStoreToml(bpLayersDir);
  const unmet = new Set(build?.unmet ?? []);
  return {
    buildpack: bp,
    layersDir: bpLayersDir,
    layers,
    ignoredLayers,
    launch: launch ?? { labels: [], processes: [], slices: [], bom: [] },
    build: build ?? { unmet: [], bom: [] },
    store,
    sbom,
    met: planNames.filter((n) => !unmet.has(n)),
  };
}

/** The Buildpack Plan file: `[[entries]] name = …  [entries.metadata] …`. */
export function encodeBuildpackPlan(entries: readonly BuildpackPlanEntry[]): string {
  return stringifyToml({
    entries: entries.map((e) => ({
      name: e.name,
      ...(e.metadata && Object.keys(e.metadata).length > 0 ? { metadata: e.metadata } : {}),
    })),
  });
}

/** Parse a Buildpack Plan file (used by tests and by tools inspecting what a buildpack got). */
export function parseBuildpackPlan(text: string, source: string): BuildpackPlanEntry[] {
  const raw = parseToml(text, source);
  const entries = Array.isArray(raw.entries) ? (raw.entries as Record<string, unknown>[]) : [];
  return entries.map((e) => ({
    name: String(e.name),
    metadata: (e.metadata as Record<string, unknown> | undefined) ?? {},
  }));
}

/**
 * The environment of one bin/build: accumulated build env → user env (unless clear-env) → operator env →
 * the lifecycle's `CNB_*` inputs, each gated on the buildpack's own API.
 */
export async function buildProcessEnv(
  opts: Pick<
    RunBuildOptions,
    'buildpack' | 'env' | 'platformDir' | 'buildConfigDir' | 'targetEnv' | 'execEnv'
  >,
  paths: { bpLayersDir: string; planPath: string },
): Promise<Record<string, string>> {
  const bp = opts.buildpack;
  const vars: EnvVars = new Map(opts.env);
  if (!bp.clearEnv) applyUserEnv(vars, await readEnvDir(join(opts.platformDir, 'env')));
  if (opts.buildConfigDir) applyBuildConfigEnv(vars, await readEnvDir(join(opts.buildConfigDir, 'env')));
  vars.set('CNB_BUILDPACK_DIR', bp.dir);
  if (apiAtLeast(bp.api, '0.8')) {
    vars.set('CNB_PLATFORM_DIR', opts.platformDir);
    vars.set('CNB_BP_PLAN_PATH', paths.planPath);
    vars.set('CNB_LAYERS_DIR', paths.bpLayersDir);
  }
  if (apiAtLeast(bp.api, '0.10')) for (const [k, v] of Object.entries(opts.targetEnv)) vars.set(k, v);
  if (apiAtLeast(bp.api, '0.12') && opts.execEnv) vars.set('CNB_EXEC_ENV', opts.execEnv);
  return envToRecord(vars);
}

/** A clear error for a bin/build that is missing or lacks an execute bit, before trying to run it. */
async function checkExecutable(path: string, who: string): Promise<void> {
  let st: Awaited<ReturnType<typeof stat>>;
  try {
    st = await stat(path);
  } catch {
    throw new PackfarmError('BUILDPACK_NO_BUILD', `${who}: ${path} does not exist`, {
      kind: 'buildpack-failed',
      hint: 'a component buildpack needs an executable bin/build',
    });
  }
  if (!st.isFile() || (Number(st.mode) & 0o111) === 0) {
    throw new PackfarmError(
      'BUILDPACK_NOT_EXECUTABLE',
      `${who}: ${path} is not an executable file (mode ${(Number(st.mode) & 0o777).toString(8).padStart(4, '0')})`,
      { kind: 'buildpack-failed', hint: `chmod +x ${path}` },
    );
  }
}

async function readOptional<T>(
  path: string,
  parse: (text: string, source: string) => T,
): Promise<T | undefined> {
  const text = await readFileIfExists(path);
  return text === undefined ? undefined : parse(text, path);
}
