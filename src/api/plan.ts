import { createHash } from 'node:crypto';
import { rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { availableParallelism } from 'node:os';
import { z } from 'zod';
import { LATEST_PLATFORM_API } from '../platform/api.js';
import type { BuildpackStore, Order } from '../buildpack/descriptor.js';
import {
  type ResolvedBuilder,
  builderImageLocation,
  isBuilderImage,
  resolveBuilder,
} from '../builder/resolve.js';
import type { CacheLocation } from '../cache/open.js';
import { detectPlatforms } from '../exec/binfmt.js';
import { ensureDataDir, packfarmDataDir } from '../image/data-dir.js';
import {
  type ImagePlatforms,
  describePlatforms,
  imagePlatforms,
  pickPlatformImage,
} from '../image/platforms.js';
import type { ImageStore } from '../image/store.js';
import {
  type ImageLocation,
  type OpenImageOptions,
  type OpenedImage,
  aboutImage,
  ifImageExists,
  storeAbout,
  appImageLocation,
  insecureRegistriesFrom,
  openImage,
  parseImageLocation,
} from '../image/transport.js';
import type { Digest } from '../oci/digest.js';
import { formatPlatform, hostPlatform, type Platform, platformsEqual } from '../oci/platform.js';
import { appFileFilter } from '../platform/app-files.js';
import { collectUserEnv } from '../platform/env-files.js';
import { type ProjectDescriptor, readProjectDescriptor } from '../platform/project.js';
import { type ExportOutput, addExportOutput } from '../phase/export.js';
import {
  EXTRA_CA_ENV,
  defaultBuilder,
  defaultBuilderLocation,
  localCaCertificates,
} from '../builder/default-builder.js';
import { PackfarmError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { resolveCreationTime } from '../util/time.js';
import type { CredentialResolver } from '../registry/credentials.js';
import { createRegistryClientPool } from '../registry/pool.js';
import { parseWith } from '../util/validate.js';
import { NetworkSchema, PullPolicySchema, VolumeSchema, pulledImageName } from './build-flags.js';
import { checkExecutorOptions, checkTagDestination } from './build-terms.js';
import { buildpacksVaryByPlatform, collectBuildpacks, resolveBuildpacks } from './buildpacks.js';
import { type BuildEventListener, eventLogger } from './events.js';
import {
  type MachinePlatforms,
  type Runs,
  defaultBuilderTargets,
  defaultTargets,
  describeMachine,
  howRunnable,
  parsePlatformList,
} from './targets.js';
import { makeTempDir } from '../util/tempdir.js';

/**
 * `packfarm build`, planned once before anything runs: the app files, the builder, the buildpacks, the user
 * env, the outputs and the cache, and for every target the build image and run image chosen for it (with
 * digests), how this machine runs it and with which executor. Whatever makes a target impossible (no child
 * for it in the builder, build image or run image; a platform this machine cannot run; a foreign target on
 * the host executor) is an error here, naming the target, the image and the platforms the image has.
 */
export const BuildOptionsSchema = z.object({
  /** Output: a registry reference (with `publish`), `oci:DIR[:TAG]`, or a bare reference for the local layout. */
  image: z.string().min(1),
  /** The app directory (default: the current directory). */
  path: z.string().min(1).default('.'),
  builder: z.string().min(1).optional(),
  buildpacks: z.array(z.string().min(1)).default([]),
  runImage: z.string().min(1).optional(),
  /** The image buildpacks run in (an image or an index), for a build without a builder image. */
  buildImage: z.string().min(1).optional(),
  env: z.array(z.string()).default([]),
  envFiles: z.array(z.string()).default([]),
  publish: z.boolean().default(false),
  insecureRegistries: z.array(z.string()).default([]),
  cacheDir: z.string().min(1).optional(),
  cacheImage: z.string().min(1).optional(),
  clearCache: z.boolean().default(false),
  previousImage: z.string().min(1).optional(),
  /** `now`, unix seconds, or undefined for SOURCE_DATE_EPOCH / 1980-01-01T00:00:01Z. */
  creationTime: z.string().min(1).optional(),
  defaultProcess: z.string().min(1).optional(),
  /** project.toml path (default `<path>/project.toml`). */
  descriptor: z.string().min(1).optional(),
  /** Extra tags (pack's `--tag`): same repository → more tags; another → another output. */
  tags: z.array(z.string().min(1)).default([]),
  /** Targets: `os/arch[/variant]` entries, each may be a comma-separated list (default: see targets.ts). */
  platforms: z.array(z.string().min(1)).default([]),
  /** One target (kept for API callers of the one-platform build); joins `platforms`. */
  platform: z.string().min(1).optional(),
  /** How buildpacks run: `oci` (default with a build image) or `host` (this machine, no isolation). */
  executor: z.enum(['host', 'oci']).optional(),
  /** The buildpacks' network: the host's (default) or none (oci executor only). */
  network: NetworkSchema.optional(),
  /** Host paths bind-mounted for the buildpacks (oci executor; the host executor refuses them). */
  volumes: z.array(VolumeSchema).default([]),
  /** pack's --pull-policy, for the builder and run images (build-flags.ts pulledImageName). */
  pullPolicy: PullPolicySchema.default('always'),
  /** Copy `<layers>/sbom` here after the build (a subdirectory per target with several targets). */
  sbomOutputDir: z.string().min(1).optional(),
  /** Copy report.toml here after the build (a subdirectory per target with several targets). */
  reportOutputDir: z.string().min(1).optional(),
  /** Group id owning the buildpack and app layers in the image (default: the CNB group). */
  gid: z.number().int().nonnegative().optional(),
  /** Targets built at the same time (default: the number of CPUs). */
  jobs: z.number().int().positive().optional(),
  /** The index's format when there are several targets: OCI image index, or Docker manifest list. */
  format: z.enum(['oci', 'docker']).default('oci'),
  platformApi: z.string().default(LATEST_PLATFORM_API),
  /** Where --keep-temp builds go (default os.tmpdir()). */
  tmpDir: z.string().optional(),
  /** Build in a fresh temp dir (under tmpDir) and keep it, for debugging; its path is in the report. */
  keepTemp: z.boolean().default(false),
});

export type BuildOptions = z.input<typeof BuildOptionsSchema>;
export type ParsedBuildOptions = z.output<typeof BuildOptionsSchema>;

export type ExecutorKind = 'host' | 'oci';

export interface PlanHooks {
  /** The environment: CNB_INSECURE_REGISTRIES, SOURCE_DATE_EPOCH, PACKFARM_HOME, and what buildpacks may see. */
  env?: NodeJS.ProcessEnv;
  /** What this machine runs (default: its native platforms plus the emulated ones binfmt_misc offers). */
  machine?: MachinePlatforms;
  /** Warnings and information found while planning arrive here (target '', phase 'plan'). */
  onEvent?: BuildEventListener;
  /**
   * Registry credentials for every store the build opens (default: the keychain of `env`). A farm job passes
   * its scoped tokens this way, renewed while it runs.
   */
  credentials?: CredentialResolver;
  /**
   * project.toml buildpack `uri`s (as written there) read from elsewhere: a farm node gets the coordinator's
   * local buildpackages as layouts of its own, while the app's project.toml still names the coordinator's paths.
   */
  projectBuildpackUris?: ReadonlyMap<string, string>;
}

export interface TargetPlan {
  platform: Platform;
  /** `os/arch[/variant]`, the target's name in events, errors and the report. */
  name: string;
  runs: Runs;
  executor: ExecutorKind;
  buildpacks: { store: BuildpackStore; order: Order };
  runImage: {
    /** The reference recorded in labels. */
    name: string;
    mirrors: string[];
    store: ImageStore;
    /** Tag or digest in `store` (an index or an image); the analyzer picks the target's child. */
    target: string;
    /** The image manifest chosen for this target. */
    digest: Digest;
  };
  /** The image buildpacks run in (oci executor): its reference, store and the manifest chosen for this target. */
  buildImage?: { name: string; store: ImageStore; digest: Digest };
  builder?: string;
}

export interface BuildPlan {
  options: ParsedBuildOptions;
  env: NodeJS.ProcessEnv;
  cwd: string;
  appPath: string;
  appFilter: ReturnType<typeof appFileFilter> | undefined;
  project: ProjectDescriptor | undefined;
  userEnv: Map<string, string>;
  createdAt: Date | undefined;
  insecureRegistries: string[];
  outputLocation: ImageLocation;
  /** The outputs with their tags (the index, or the one image, goes there). */
  outputs: ExportOutput[];
  previousImage: { store: ImageStore; target: string } | undefined;
  cache: { location: CacheLocation; description: string } | undefined;
  targets: TargetPlan[];
  /** Several targets: per-target images by digest, then one index under the tags. One: a plain image. */
  index: boolean;
  jobs: number;
  machine: MachinePlatforms;
  /** Things the user should know about the plan (targets left out and why, host-only builds). */
  notes: string[];
  /** Removes what planning staged (builders, buildpacks). */
  cleanup(): Promise<void>;
}

export async function planBuild(input: BuildOptions, hooks: PlanHooks = {}): Promise<BuildPlan> {
  const opts = parseWith(BuildOptionsSchema, input, 'build options');
  const env = hooks.env ?? process.env;
  const cwd = process.cwd();
  const appPath = resolve(cwd, opts.path);
  await requireDir(appPath, '--path');
  if (opts.cacheDir && opts.cacheImage)
    throw new PackfarmError('INVALID_ARGS', '--cache-dir and --cache-image cannot be used together');
  // Build dirs, caches and the default local layout live there: an unusable one is said so up front.
  await ensureDataDir(env);
  const insecure = insecureRegistriesFrom(opts.insecureRegistries, env);
  // Registry clients of this build only (a node runs many builds): closed by the plan's cleanup.
  const pool = createRegistryClientPool();
  try {
    return await planWith(opts, hooks, { env, cwd, appPath, insecure, pool });
  } catch (err) {
    await pool.close();
    throw err;
  }
}

type PlanContext = {
  env: NodeJS.ProcessEnv;
  cwd: string;
  appPath: string;
  insecure: string[];
  pool: ReturnType<typeof createRegistryClientPool>;
};
type PlanLogger = ReturnType<typeof eventLogger>;
/** A builder image or build image: the image buildpacks run in, with the platforms it has. */
type IsolatedImage = { platforms: ImagePlatforms; name: string; store: ImageStore };
type BuildChild = { name: string; store: ImageStore; digest: Digest };
/** What targets with the same build image child share: the builder and the gathered buildpacks. */
type SharedBuild = { builder: ResolvedBuilder | undefined; buildpacks: TargetPlan['buildpacks'] };

async function planWith(opts: ParsedBuildOptions, hooks: PlanHooks, ctx: PlanContext): Promise<BuildPlan> {
  const { env, cwd, insecure, pool } = ctx;
  const access: OpenImageOptions = {
    insecureRegistries: insecure,
    registry: { pool, ...(hooks.credentials ? { credentials: hooks.credentials } : {}) },
  };
  const createdAt = resolveCreationTime(opts.creationTime, env);
  const machine = hooks.machine ?? (await localMachine());
  const requested = parsePlatformList([...opts.platforms, ...(opts.platform ? [opts.platform] : [])]);
  const read = await readProject(opts, hooks, ctx);
  const { log, appFilter } = read;
  const project = withBuildpackUris(read.project, hooks.projectBuildpackUris);
  const { outputLocation, output, outputs } = await openOutputs(opts, env, access);
  const userEnv = await collectUserEnv({
    project: project?.env ?? [],
    envFiles: opts.envFiles.map((f) => resolve(cwd, f)),
    envFlags: opts.env,
    hostEnv: env,
  });

  const scratch = await makeTempDir(opts.tmpDir ?? tmpdir(), 'plan-scratch');
  const builders: ResolvedBuilder[] = [];
  const cleanup = async () => {
    for (const b of builders) await b.cleanup().catch(() => undefined);
    await rm(scratch, { recursive: true, force: true });
    await pool.close();
  };
  try {
    const notes: string[] = [];
    const { builderName, builderSource } = await chooseBuilder(opts, project, userEnv, ctx, log, {
      requested,
      machine,
      notes,
    });
    let scratchN = 0;
    const nextScratch = () => join(scratch, String(scratchN++));
    const resolveOne = async (spec: string, platform?: Platform) => {
      const b = await resolveBuilder(spec, {
        cwd,
        scratchDir: nextScratch(),
        insecureRegistries: insecure,
        registry: { pool },
        ...(platform ? { platform } : {}),
        logger: log,
      }).catch((err: unknown) => {
        throw aboutImage(err, 'builder', builderName ?? spec);
      });
      builders.push(b);
      return b;
    };

    // A builder.toml naming buildpackages reads them for one platform: the first requested one, if any.
    const dirPlatform = requested[0] ?? hostPlatform();
    const { builderImage, dirBuilder, buildImage } = await openBuildImages(
      opts,
      builderName,
      builderSource,
      cwd,
      access,
      (spec) => resolveOne(spec, dirPlatform),
    );
    const isolated = builderImage ?? buildImage;
    if (opts.executor === 'oci' && !isolated)
      throw new PackfarmError(
        'BUILD_IMAGE_REQUIRED',
        '--executor oci runs buildpacks inside a build image, and this build has none',
        { hint: 'pass --builder with a builder image, or --build-image REF' },
      );
    const executorKind: ExecutorKind = opts.executor ?? (isolated ? 'oci' : 'host');
    checkExecutorOptions(opts, executorKind, log);

    const targets = chooseTargets(requested, builderImage, dirBuilder, machine, executorKind, notes);
    if (!isolated && executorKind === 'host' && !builderName)
      notes.push(
        `no builder or build image: buildpacks run on this machine (host executor), so only its own platform (${formatPlatform(hostPlatform())}) can be built`,
      );

    // Buildpackages (--buildpack, project.toml, builder.toml) give each platform its own buildpacks.
    const perPlatform =
      buildpacksVaryByPlatform(opts.buildpacks, project) || (dirBuilder?.perPlatform ?? false);
    const byBuildChild = new Map<string, SharedBuild>();
    const planned: TargetPlan[] = [];
    for (const platform of targets) {
      const name = formatPlatform(platform);
      const runs = checkRunnable(machine, platform, name, executorKind, isolated);
      const buildChild = isolated
        ? pickBuildChild(isolated, platform, name, builderImage !== undefined)
        : undefined;

      const key = `${builderImage && buildChild ? buildChild.digest : ''} ${perPlatform ? name : ''}`;
      let shared = byBuildChild.get(key);
      if (!shared) {
        let builder = builderImage ? await resolveOne(builderImage.name, platform) : dirBuilder;
        if (dirBuilder?.perPlatform && !platformsEqual(platform, dirPlatform))
          builder = await resolveOne(builderSource ?? builderName ?? '', platform);
        shared = await gatherBuildpacks(opts, project, builder, {
          cwd,
          executorKind,
          nextScratch,
          platform,
          access,
        });
        byBuildChild.set(key, shared);
      }

      planned.push({
        platform,
        name,
        runs,
        executor: executorKind,
        buildpacks: shared.buildpacks,
        runImage: await planRunImage(opts, shared, output, platform, name, env, access),
        ...(buildChild ? { buildImage: buildChild } : {}),
        ...(shared.builder ? { builder: shared.builder.name } : {}),
      });
    }
    const duplicate = planned.find(
      (t, i) => planned.findIndex((u) => platformsEqual(u.platform, t.platform)) !== i,
    );
    if (duplicate) throw new Error(`planBuild: target ${duplicate.name} twice`);

    const previousImage = await openPreviousImage(opts, env, access, output);

    return {
      options: opts,
      env,
      cwd,
      appPath: ctx.appPath,
      appFilter,
      project,
      userEnv,
      createdAt,
      insecureRegistries: insecure,
      outputLocation,
      outputs,
      ...{
        previousImage: previousImage
          ? { store: previousImage.store, target: previousImage.target }
          : undefined,
      },
      cache: await cacheLocation(opts, outputLocation, env, access),
      targets: planned,
      index: planned.length > 1,
      jobs: Math.max(1, opts.jobs ?? availableParallelism()),
      machine,
      notes,
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/** project.toml (or --descriptor) and the app file filter it sets; also the plan's event logger. */
async function readProject(opts: ParsedBuildOptions, hooks: PlanHooks, ctx: PlanContext) {
  const descriptorPath = opts.descriptor
    ? resolve(ctx.cwd, opts.descriptor)
    : join(ctx.appPath, 'project.toml');
  const log = eventLogger(
    '',
    () => 'plan',
    (e) => hooks.onEvent?.(e),
  );
  const project = await readProjectDescriptor(descriptorPath, { logger: log });
  if (opts.descriptor && !project)
    throw new PackfarmError('DESCRIPTOR_NOT_FOUND', `--descriptor ${descriptorPath}: no such file`);
  const appFilter = project
    ? appFileFilter({ include: project.include, exclude: project.exclude }, project.source)
    : undefined;
  return { log, project, appFilter };
}

/** IMAGE and every --tag, opened as destinations. */
async function openOutputs(opts: ParsedBuildOptions, env: NodeJS.ProcessEnv, access: OpenImageOptions) {
  const outputLocation = appImageLocation(opts.image, { publish: opts.publish, env, source: 'IMAGE' });
  const opened = await openImage(outputLocation, { ...access, create: true });
  const output: OpenedImage = { ...opened, store: storeAbout(opened.store, 'IMAGE', opts.image) };
  if (!output.tag)
    throw new PackfarmError('INVALID_ARGS', `IMAGE ${opts.image}: give a tag, not a digest, to build into`);
  const outputs: ExportOutput[] = [{ store: output.store, tags: [output.tag], names: [opts.image] }];
  for (const t of opts.tags) {
    checkTagDestination(opts.image, t, opts.publish);
    const o = await openImage(appImageLocation(t, { publish: opts.publish, env, source: '--tag' }), {
      ...access,
      create: true,
    });
    addExportOutput(outputs, storeAbout(o.store, '--tag', t), o.tag ?? 'latest', t);
  }
  return { outputLocation, output, outputs };
}

/** The builder named by the flags or project.toml, or the default builder when nothing names buildpacks. */
async function chooseBuilder(
  opts: ParsedBuildOptions,
  project: ProjectDescriptor | undefined,
  userEnv: Map<string, string>,
  ctx: PlanContext,
  log: PlanLogger,
  wanted: { requested: Platform[]; machine: MachinePlatforms; notes: string[] },
): Promise<{ builderName: string | undefined; builderSource: string | undefined }> {
  const { env, cwd, insecure } = ctx;
  // Nothing names buildpacks: the default builder (builders/default), made on first use and cached.
  const namesBuildpacks =
    opts.builder !== undefined ||
    project?.builder !== undefined ||
    opts.buildpacks.length > 0 ||
    (project?.group.length ?? 0) > 0 ||
    opts.buildImage !== undefined;
  let builderName = opts.builder ?? project?.builder;
  let builderSource = builderName;
  if (!namesBuildpacks) {
    // An oci: layout under the data dir (nothing to pull), made for exactly the platforms this build needs.
    builderName = (
      await defaultBuilder({
        env,
        insecureRegistries: insecure,
        platforms: await defaultBuilderPlatforms(env, wanted),
        onProgress: (m) => log.info(m),
      })
    ).reference;
    builderSource = builderName;
    // The shipped buildpacks download over HTTPS: they trust what this machine trusts locally too (a
    // proxy's CA in /usr/local/share/ca-certificates), unless the user set the variable.
    const localCas = await localCaCertificates();
    if (localCas && !userEnv.has(EXTRA_CA_ENV)) userEnv.set(EXTRA_CA_ENV, localCas);
  } else if (builderName && !(await pathExists(resolve(cwd, builderName)))) {
    // pack's --pull-policy: a builder image may come from the default local layout instead of the registry.
    const named = builderName;
    builderSource = await pulledImageName(named, opts.pullPolicy, 'builder', env).catch((err: unknown) => {
      throw aboutImage(err, 'builder', named);
    });
  }
  return { builderName, builderSource };
}

/** The platforms to make the default builder for: those requested, else those it has that this machine runs natively. */
async function defaultBuilderPlatforms(
  env: NodeJS.ProcessEnv,
  wanted: { requested: Platform[]; machine: MachinePlatforms; notes: string[] },
): Promise<Platform[]> {
  if (wanted.requested.length > 0) return wanted.requested;
  const { targets, note } = defaultBuilderTargets(
    (await defaultBuilderLocation({ env })).targets,
    wanted.machine,
  );
  if (note) wanted.notes.push(note);
  return targets;
}

/** What the builder (or build image) offers: the platforms of a builder image, or builder.toml [[targets]]. */
async function openBuildImages(
  opts: ParsedBuildOptions,
  builderName: string | undefined,
  builderSource: string | undefined,
  cwd: string,
  access: OpenImageOptions,
  resolveOne: (spec: string) => Promise<ResolvedBuilder>,
) {
  let builderImage: IsolatedImage | undefined;
  let dirBuilder: ResolvedBuilder | undefined;
  if (builderName) {
    if (await isBuilderImage(builderSource ?? builderName, cwd)) {
      const opened = await openImage(builderImageLocation(builderSource ?? builderName, cwd), access).catch(
        (err: unknown) => {
          throw aboutImage(err, 'builder', builderName);
        },
      );
      const platforms = await imagePlatforms(opened.store, opened.target);
      if (!platforms)
        throw new PackfarmError('BUILDER_NOT_FOUND', `builder ${opened.display}: no such image`, {
          hint: 'check the reference (and --insecure-registry for a plain-HTTP registry)',
        });
      builderImage = { platforms, name: builderSource ?? builderName, store: opened.store };
    } else {
      dirBuilder = await resolveOne(builderSource ?? builderName);
    }
  }
  const buildImageName = opts.buildImage ?? dirBuilder?.buildImage;
  let buildImage: IsolatedImage | undefined;
  if (buildImageName && !builderImage) {
    const opened = await openImage(buildImageName, access);
    const platforms = await imagePlatforms(opened.store, opened.target);
    if (!platforms)
      throw new PackfarmError('BUILD_IMAGE_NOT_FOUND', `build image ${opened.display}: no such image`, {
        hint: 'check --build-image (or builder.toml [build] image) and --insecure-registry',
      });
    buildImage = { platforms, name: buildImageName, store: opened.store };
  }
  return { builderImage, dirBuilder, buildImage };
}

/** The requested platforms, or those the builder offers that this machine can build (noting the rest). */
function chooseTargets(
  requested: Platform[],
  builderImage: IsolatedImage | undefined,
  dirBuilder: ResolvedBuilder | undefined,
  machine: MachinePlatforms,
  executorKind: ExecutorKind,
  notes: string[],
): Platform[] {
  if (requested.length > 0) return requested;
  const offered = builderImage
    ? builderImage.platforms.images.map((i) => i.platform)
    : (dirBuilder?.targets ?? []);
  const d = defaultTargets({ offered, machine, canEmulate: executorKind === 'oci' });
  for (const l of d.leftOut)
    notes.push(`not building ${formatPlatform(l.platform)} (offered by the builder): ${l.reason}`);
  if (d.targets.length === 0)
    throw new PackfarmError(
      'NO_TARGETS',
      `none of the builder's platforms (${offered.map(formatPlatform).join(', ')}) can be built on this machine (${describeMachine(machine)})`,
      { hint: 'pass --platform, or register qemu handlers with packfarm node setup-emulation' },
    );
  return d.targets;
}

/** How this machine runs the target; an error when it cannot, or when the host executor would need emulation. */
function checkRunnable(
  machine: MachinePlatforms,
  platform: Platform,
  name: string,
  executorKind: ExecutorKind,
  isolated: IsolatedImage | undefined,
): Runs {
  const runs = howRunnable(machine, platform);
  if (!runs)
    throw new PackfarmError(
      'TARGET_NOT_RUNNABLE',
      `target ${name}: this machine cannot run it (${describeMachine(machine)})`,
      {
        hint: 'register qemu-user handlers (packfarm node setup-emulation, as root), or build it on a machine of that platform',
      },
    );
  if (executorKind === 'host' && runs === 'emulated')
    throw new PackfarmError(
      'FOREIGN_TARGET_ON_HOST',
      `target ${name}: the host executor runs buildpacks directly on this ${formatPlatform(hostPlatform())} machine, so it cannot build ${name}`,
      {
        hint: isolated
          ? 'use --executor oci (buildpacks then run in the build image, emulated)'
          : 'give a builder image or --build-image so buildpacks run in that platform’s build image',
      },
    );
  return runs;
}

/** The target's child of the builder image or build image. */
function pickBuildChild(
  isolated: IsolatedImage,
  platform: Platform,
  name: string,
  isBuilder: boolean,
): BuildChild {
  const child = pickPlatformImage(isolated.platforms, platform);
  if (!child)
    throw new PackfarmError(
      'NO_MATCHING_PLATFORM',
      `target ${name}: ${isBuilder ? 'builder' : 'build image'} ${isolated.name} has no image for it (it has ${describePlatforms(isolated.platforms)})`,
      { hint: 'build only the platforms it has (--platform), or use an image with that platform' },
    );
  return { name: isolated.name, store: isolated.store, digest: child.digest };
}

/** project.toml with some buildpack uris replaced (the file itself, in the app, stays as it is). */
function withBuildpackUris(
  project: ProjectDescriptor | undefined,
  uris: ReadonlyMap<string, string> | undefined,
): ProjectDescriptor | undefined {
  if (!project || !uris || uris.size === 0) return project;
  const swap = (list: ProjectDescriptor['group']) =>
    list.map((b) => {
      const to = b.uri !== undefined ? uris.get(b.uri) : undefined;
      return to === undefined ? b : { ...b, uri: to };
    });
  return { ...project, group: swap(project.group), pre: swap(project.pre), post: swap(project.post) };
}

async function gatherBuildpacks(
  opts: ParsedBuildOptions,
  project: ProjectDescriptor | undefined,
  builder: ResolvedBuilder | undefined,
  ctx: {
    cwd: string;
    executorKind: ExecutorKind;
    nextScratch: () => string;
    platform: Platform;
    access: OpenImageOptions;
  },
): Promise<SharedBuild> {
  const { executorKind, nextScratch } = ctx;
  const resolved = await resolveBuildpacks({
    flags: opts.buildpacks,
    project,
    builder,
    cwd: ctx.cwd,
    scratchDir: nextScratch(),
    platform: ctx.platform,
    ...(ctx.access.insecureRegistries ? { insecureRegistries: ctx.access.insecureRegistries } : {}),
    ...(ctx.access.registry ? { registry: ctx.access.registry } : {}),
  });
  // In a container the buildpacks are one mounted dir: gather them there.
  const buildpacks =
    executorKind === 'oci'
      ? {
          store: await collectBuildpacks(resolved.store, resolved.order, join(nextScratch(), 'buildpacks')),
          order: resolved.order,
        }
      : resolved;
  return { builder, buildpacks };
}

/** The run image (a mirror on the output's registry first) and its child for the target. */
async function planRunImage(
  opts: ParsedBuildOptions,
  shared: SharedBuild,
  output: OpenedImage,
  platform: Platform,
  name: string,
  env: NodeJS.ProcessEnv,
  access: OpenImageOptions,
): Promise<TargetPlan['runImage']> {
  const runNames = opts.runImage ? [opts.runImage] : (shared.builder?.runImages ?? []);
  const runName = pickRunImage(runNames, output);
  if (!runName)
    throw new PackfarmError(
      'RUN_IMAGE_REQUIRED',
      shared.builder
        ? `builder ${shared.builder.name} names no run image`
        : 'no run image: without a builder, --run-image is required',
      { hint: 'pass --run-image REF (a registry reference or oci:DIR[:TAG])' },
    );
  const run = await pulledImageName(runName, opts.pullPolicy, 'run image', env)
    .then((ref) => openImage(ref, access))
    .then((o) => ({ ...o, store: storeAbout(o.store, 'run image', runName) }))
    .catch((err: unknown) => {
      throw aboutImage(err, 'run image', runName);
    });
  const runPlatforms = await imagePlatforms(run.store, run.target);
  if (!runPlatforms)
    throw new PackfarmError('RUN_IMAGE_NOT_FOUND', `run image ${run.display} not found`, {
      hint: 'check --run-image (or the builder’s run image) and that the image was pushed',
    });
  const runChild = pickPlatformImage(runPlatforms, platform);
  if (!runChild)
    throw new PackfarmError(
      'NO_MATCHING_PLATFORM',
      `target ${name}: run image ${runName} has no image for it (it has ${describePlatforms(runPlatforms)})`,
      {
        hint: 'build only the platforms it has (--platform), or use a run image index with that platform',
      },
    );
  return {
    name: runName,
    mirrors: runNames.filter((n) => n !== runName),
    store: run.store,
    target: run.target,
    digest: runChild.digest,
  };
}

/** --previous-image when given (absent is fine), else the output itself. */
async function openPreviousImage(
  opts: ParsedBuildOptions,
  env: NodeJS.ProcessEnv,
  access: OpenImageOptions,
  output: OpenedImage,
): Promise<{ store: ImageStore; target: string } | undefined> {
  return opts.previousImage
    ? await ifImageExists(
        openImage(
          appImageLocation(opts.previousImage, { publish: opts.publish, env, source: '--previous-image' }),
          access,
        ),
      ).then((o) =>
        o ? { ...o, store: storeAbout(o.store, 'previous image', opts.previousImage as string) } : undefined,
      )
    : output;
}

/**
 * What this machine runs: its native platforms, plus the foreign ones a binfmt_misc handler with the F flag
 * emulates (usable inside a build image's root filesystem).
 */
async function localMachine(): Promise<MachinePlatforms> {
  const m = await detectPlatforms();
  return {
    native: m.native,
    emulated: m.emulated.filter((e) => e.usableInContainers).map((e) => e.platform),
  };
}

async function requireDir(path: string, flag: string): Promise<void> {
  const st = await stat(path).catch(() => undefined);
  if (!st?.isDirectory())
    throw new PackfarmError('APP_NOT_FOUND', `${flag} ${path}: not a directory`, {
      hint: 'point --path at the app source directory',
    });
}

/** A run image mirror on the output's own registry first: its layers can then be mounted, not copied. */
function pickRunImage(names: readonly string[], output: OpenedImage): string | undefined {
  const registry = output.store.registryRepository?.registry;
  if (registry) {
    const same = names.find((n) => {
      try {
        const loc = parseImageLocation(n, 'run image');
        return loc.transport === 'docker' && loc.reference.registry === registry;
      } catch {
        return false;
      }
    });
    if (same) return same;
  }
  return names[0];
}

async function cacheLocation(
  opts: ParsedBuildOptions,
  output: ImageLocation,
  env: NodeJS.ProcessEnv,
  access: OpenImageOptions,
): Promise<{ location: CacheLocation; description: string } | undefined> {
  if (opts.cacheImage) {
    const o = await openImage(opts.cacheImage, { ...access, create: true });
    return {
      location: {
        kind: 'image',
        store: storeAbout(o.store, 'cache image', opts.cacheImage),
        tag: o.tag ?? 'latest',
      },
      description: opts.cacheImage,
    };
  }
  if (opts.cacheDir) {
    const dir = resolve(opts.cacheDir);
    return { location: { kind: 'dir', dir }, description: dir };
  }
  // Like pack's per-image build cache volume: one cache dir per output image name (without the tag); inside,
  // one subdirectory per target platform.
  const key =
    output.transport === 'docker'
      ? `${output.reference.registry}/${output.reference.repository}`
      : `oci:${output.dir}`;
  const dir = join(
    packfarmDataDir(env),
    'cache',
    createHash('sha256').update(key).digest('hex').slice(0, 16),
  );
  return { location: { kind: 'dir', dir }, description: dir };
}
