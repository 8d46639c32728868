import { createHash } from 'node:crypto';
import { chmod, mkdir, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { LATEST_PLATFORM_API } from '../platform/api.js';
import type { BuildpackStore, Order, OrderElement } from '../buildpack/descriptor.js';
import { platformOrderFromFile } from '../platform/order.js';
import { layeredBuildpackStore, type StagedBuildpack, stageBuildpack } from '../buildpack/source.js';
import type { ResolvedBuilder } from '../builder/resolve.js';
import type { CacheLocation } from '../cache/open.js';
import { createHostExecutor } from '../exec/host.js';
import { packfarmDataDir } from '../image/data-dir.js';
import {
  appImageLocation,
  formatImageLocation,
  ifImageExists,
  insecureRegistriesFrom,
  type OpenedImage,
  type OpenImageOptions,
  openImage,
  parseImageLocation,
} from '../image/transport.js';
import { createRegistryClientPool } from '../registry/pool.js';
import type { Digest } from '../oci/digest.js';
import {
  formatPlatform,
  hostPlatform,
  type Platform,
  parsePlatform,
  platformCompatible,
} from '../oci/platform.js';
import { appFileFilter, syncAppDir } from '../platform/app-files.js';
import { collectUserEnv, writePlatformEnv } from '../platform/env-files.js';
import type { ProjectMetadata } from '../platform/labels.js';
import {
  type ProjectBuildpack,
  type ProjectDescriptor,
  readProjectDescriptor,
  resolveProjectBuildpack,
} from '../platform/project.js';
import { type CreateEvent, type CreatePhase, create } from '../phase/create.js';
import { type ExportOutput, type LayerOutcome, addExportOutput } from '../phase/export.js';
import { PackfarmError } from '../util/errors.js';
import { type Logger, silentLogger } from '../util/log.js';
import { pathExists } from '../util/fs.js';
import { resolveCreationTime } from '../util/time.js';
import { buildDirKey, openBuildDirs } from './workdir.js';
import { parseWith } from '../util/validate.js';

/**
 * `packfarm build` for one platform: everything a platform does around the creator. Resolve the app files
 * (project.toml include/exclude), the buildpacks (builder, `--buildpack`, project.toml group), the run image,
 * the output and the cache; run analyze → detect → restore → build → export in temp dirs; clean up.
 */
export const BuildAppOptionsSchema = z.object({
  /** Output: a registry reference (with `publish`), `oci:DIR[:TAG]`, or a bare reference for the local layout. */
  image: z.string().min(1),
  /** The app directory (default: the current directory). */
  path: z.string().min(1).default('.'),
  builder: z.string().min(1).optional(),
  buildpacks: z.array(z.string().min(1)).default([]),
  runImage: z.string().min(1).optional(),
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
  /** `os/arch[/variant]` (default: the host's). */
  platform: z.string().min(1).optional(),
  platformApi: z.string().default(LATEST_PLATFORM_API),
  /** Where --keep-temp builds go (default os.tmpdir()). */
  tmpDir: z.string().optional(),
  /** Build in a fresh temp dir (under tmpDir) and keep it, for debugging; its path is in the report. */
  keepTemp: z.boolean().default(false),
});

export type BuildAppOptions = z.input<typeof BuildAppOptionsSchema>;

export interface BuildAppHooks {
  logger?: Logger;
  onEvent?: (e: CreateEvent) => void;
  /** The environment: CNB_INSECURE_REGISTRIES, SOURCE_DATE_EPOCH, PACKFARM_HOME, and what buildpacks may see. */
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

/** What `packfarm build --json` prints. */
export interface BuildReport {
  image: string;
  /** Where the image went, as a location (`docker://…` or `oci:DIR:TAG`). */
  location: string;
  digest: Digest;
  mediaType: string;
  manifestSize: number;
  tags: string[];
  platform: string;
  runImage: { reference: string; topLayer: string };
  buildpacks: Array<{ id: string; version: string }>;
  processes: Array<{ type: string; default: boolean }>;
  layers: Array<{ name: string; digest: Digest; size: number; outcome: LayerOutcome }>;
  baseLayers: Record<'exists' | 'mounted' | 'uploaded', number>;
  cache?: { location: string; layers: Array<{ name: string; outcome: string }> };
  timings: Record<CreatePhase, number> & { total: number; buildpacks: number; prepare: number };
  warnings: string[];
  /** Set when keepTemp: the workspace and layers dir of this build. */
  workDir?: string;
}

export async function buildApp(input: BuildAppOptions, hooks: BuildAppHooks = {}): Promise<BuildReport> {
  const t0 = performance.now();
  const opts = parseWith(BuildAppOptionsSchema, input, 'build options');
  const env = hooks.env ?? process.env;
  const log = hooks.logger ?? silentLogger;
  const cwd = process.cwd();
  const appPath = resolve(cwd, opts.path);
  await requireDir(appPath, '--path');
  if (opts.cacheDir && opts.cacheImage)
    throw new PackfarmError('INVALID_ARGS', '--cache-dir and --cache-image cannot be used together');
  const insecure = insecureRegistriesFrom(opts.insecureRegistries, env);
  // Registry clients of this build only (a node runs many builds): closed when the build ends.
  const pool = createRegistryClientPool();
  const access: OpenImageOptions = { insecureRegistries: insecure, registry: { pool } };
  const platform: Platform = opts.platform ? parsePlatform(opts.platform) : hostPlatform();
  if (!platformCompatible(hostPlatform(), platform))
    log.warn(
      `building for ${formatPlatform(platform)} on ${formatPlatform(hostPlatform())}: buildpacks run on this machine (host executor), so what they install must suit ${formatPlatform(platform)}`,
    );
  const createdAt = resolveCreationTime(opts.creationTime, env);

  const descriptorPath = opts.descriptor ? resolve(cwd, opts.descriptor) : join(appPath, 'project.toml');
  const project = await readProjectDescriptor(descriptorPath, { logger: log });
  if (opts.descriptor && !project)
    throw new PackfarmError('DESCRIPTOR_NOT_FOUND', `--descriptor ${descriptorPath}: no such file`);

  const outputLocation = appImageLocation(opts.image, { publish: opts.publish, env, source: 'IMAGE' });
  const dirs = await openBuildDirs({
    key: buildDirKey(formatImageLocation(outputLocation), formatPlatform(platform)),
    dataDir: packfarmDataDir(env),
    tmpDir: opts.tmpDir,
    keepTemp: opts.keepTemp,
  });
  let builder: ResolvedBuilder | undefined;
  try {
    const filter = project
      ? appFileFilter({ include: project.include, exclude: project.exclude }, project.source)
      : undefined;
    const synced = await syncAppDir(appPath, dirs.app, filter);
    log.debug(
      `workspace ${dirs.app}: ${synced.copied} file(s) copied, ${synced.kept} unchanged, ${synced.removed} removed`,
    );

    const builderName = opts.builder ?? project?.builder;
    if (builderName) {
      const { resolveBuilder } = await import('../builder/resolve.js');
      builder = await resolveBuilder(builderName, {
        cwd,
        scratchDir: join(dirs.scratch, 'builder'),
        insecureRegistries: insecure,
        registry: { pool },
        platform,
        logger: log,
      });
    }
    const { store, order } = await resolveBuildpacks({
      flags: opts.buildpacks,
      project,
      builder,
      cwd,
      scratchDir: join(dirs.scratch, 'buildpacks'),
    });

    const userEnv = await collectUserEnv({
      project: project?.env ?? [],
      envFiles: opts.envFiles.map((f) => resolve(cwd, f)),
      envFlags: opts.env,
      hostEnv: env,
    });
    await writePlatformEnv(dirs.platform, userEnv);

    const output = await openImage(outputLocation, { ...access, create: true });
    if (!output.tag)
      throw new PackfarmError('INVALID_ARGS', `IMAGE ${opts.image}: give a tag, not a digest, to build into`);
    const outputs: ExportOutput[] = [{ store: output.store, tags: [output.tag], names: [opts.image] }];
    for (const t of opts.tags) {
      const o = await openImage(appImageLocation(t, { publish: opts.publish, env, source: '--tag' }), {
        ...access,
        create: true,
      });
      addExportOutput(outputs, o.store, o.tag ?? 'latest', t);
    }

    const runNames = opts.runImage ? [opts.runImage] : (builder?.runImages ?? []);
    const runName = pickRunImage(runNames, output);
    if (!runName)
      throw new PackfarmError(
        'RUN_IMAGE_REQUIRED',
        builder
          ? `builder ${builder.name} names no run image`
          : 'no run image: without a builder, --run-image is required',
        { hint: 'pass --run-image REF (a registry reference or oci:DIR[:TAG])' },
      );
    const runImage = await openImage(runName, access);

    const previous: OpenedImage | undefined = opts.previousImage
      ? await ifImageExists(
          openImage(
            appImageLocation(opts.previousImage, { publish: opts.publish, env, source: '--previous-image' }),
            access,
          ),
        )
      : output;

    const cache = await cacheLocation(opts, outputLocation, env, access);

    const result = await create({
      appDir: dirs.app,
      layersDir: dirs.layers,
      platformDir: dirs.platform,
      buildpacks: store,
      order,
      runImage: {
        store: runImage.store,
        target: runImage.target,
        name: runName,
        mirrors: runNames.filter((n) => n !== runName),
      },
      outputs,
      ...(previous ? { previousImage: { store: previous.store, target: previous.target } } : {}),
      cache: cache?.location,
      clearCache: opts.clearCache,
      platform,
      platformApi: opts.platformApi,
      createdAt,
      defaultProcess: opts.defaultProcess,
      projectMetadata: projectMetadata(project),
      reportPath: join(dirs.layers, 'report.toml'),
      hostPaths: { appDir: dirs.app, layersDir: dirs.layers },
      executor: createHostExecutor(),
      hostEnv: env,
      logger: log,
      ...(hooks.onEvent ? { onEvent: hooks.onEvent } : {}),
      ...(hooks.signal ? { signal: hooks.signal } : {}),
    });

    const ex = result.exported;
    const baseLayers = { exists: 0, mounted: 0, uploaded: 0 };
    for (const b of ex.baseLayers) baseLayers[b.outcome]++;
    const md = ex.lifecycleMetadata;
    const phases = Object.values(result.timings).reduce((a, b) => a + b, 0);
    const total = performance.now() - t0;
    return {
      image: opts.image,
      location: formatImageLocation(outputLocation),
      digest: ex.digest,
      mediaType: ex.mediaType,
      manifestSize: ex.manifestSize,
      tags: ex.tags,
      platform: formatPlatform(platform),
      runImage: { reference: md.runImage.reference, topLayer: md.runImage.topLayer },
      buildpacks: result.detected.group.map((g) => ({ id: g.id, version: g.version })),
      processes: result.built.metadata.processes.map((p) => ({
        type: p.type,
        default: p.type === (opts.defaultProcess ?? result.built.metadata.buildpackDefaultProcessType),
      })),
      layers: ex.layers.map((l) => ({ name: l.name, digest: l.digest, size: l.size, outcome: l.outcome })),
      baseLayers,
      ...(cache && result.cache
        ? {
            cache: {
              location: cache.description,
              layers: result.cache.layers.map((l) => ({
                name: `${l.buildpack}:${l.layer}`,
                outcome: l.outcome,
              })),
            },
          }
        : {}),
      timings: {
        ...result.timings,
        buildpacks: result.buildpackMs,
        prepare: total - phases,
        total,
      },
      warnings: ex.warnings,
      ...(opts.keepTemp ? { workDir: dirs.root } : {}),
    };
  } finally {
    await builder?.cleanup().catch(() => undefined);
    await pool.close();
    await dirs.release();
  }
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
  opts: z.output<typeof BuildAppOptionsSchema>,
  output: ReturnType<typeof appImageLocation>,
  env: NodeJS.ProcessEnv,
  access: OpenImageOptions,
): Promise<{ location: CacheLocation; description: string } | undefined> {
  if (opts.cacheImage) {
    const o = await openImage(opts.cacheImage, { ...access, create: true });
    return {
      location: { kind: 'image', store: o.store, tag: o.tag ?? 'latest' },
      description: opts.cacheImage,
    };
  }
  if (opts.cacheDir) {
    const dir = resolve(opts.cacheDir);
    return { location: { kind: 'dir', dir }, description: dir };
  }
  // Like pack's per-image build cache volume: one cache dir per output image name (without the tag).
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

function projectMetadata(project: ProjectDescriptor | undefined): ProjectMetadata | undefined {
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

interface ResolveBuildpacksInput {
  flags: readonly string[];
  project: ProjectDescriptor | undefined;
  builder: ResolvedBuilder | undefined;
  cwd: string;
  scratchDir: string;
}

/**
 * The order to detect: one group from `--buildpack` flags (in flag order), else from project.toml's group,
 * else the builder's order; project.toml pre/post groups wrap every group either way.
 */
export async function resolveBuildpacks(
  input: ResolveBuildpacksInput,
): Promise<{ store: BuildpackStore; order: Order }> {
  const staged: StagedBuildpack[] = [];
  let n = 0;
  const scratch = async () => {
    const d = join(input.scratchDir, String(n++));
    await mkdir(d, { recursive: true });
    return d;
  };
  const fromBuilder = (id: string, version: string | undefined, what: string): OrderElement => {
    if (!input.builder)
      throw new PackfarmError(
        'BUILDPACK_NOT_FOUND',
        `${what}: ${id}${version ? `@${version}` : ''} names a buildpack of the builder, but no builder was given`,
        { hint: 'pass --builder, or give the buildpack as a directory or .tgz archive' },
      );
    const v = version ?? builderVersionOf(input.builder, id);
    if (!v)
      throw new PackfarmError(
        'BUILDPACK_NOT_FOUND',
        `${what}: buildpack ${id} is not in builder ${input.builder.name}'s order; give its version as ${id}@VERSION`,
      );
    return { id, version: v, optional: false };
  };
  const element = (s: StagedBuildpack): OrderElement => ({ id: s.id, version: s.version, optional: false });

  const fromFlag = async (flag: string): Promise<OrderElement> => {
    const path = isAbsolute(flag) ? flag : resolve(input.cwd, flag);
    if (await pathExists(path)) {
      const s = await stageBuildpack(path, { cwd: input.cwd, scratchDir: await scratch() });
      staged.push(s);
      return element(s);
    }
    const m = /^(?:urn:cnb:builder:)?([^@\s/][^@\s]*)(?:@(.+))?$/.exec(flag);
    if (m && !flag.includes('://') && !flag.endsWith('.tgz') && !flag.startsWith('.'))
      return fromBuilder(m[1] as string, m[2], `--buildpack ${flag}`);
    throw new PackfarmError('BUILDPACK_NOT_FOUND', `--buildpack ${flag}: no such directory or archive`, {
      hint: 'give a buildpack directory, a .tgz/.tar archive of one, or ID@VERSION of a builder buildpack',
    });
  };

  const fromProject = async (bp: ProjectBuildpack, project: ProjectDescriptor): Promise<OrderElement> => {
    const where = `${project.source} buildpack ${bp.id ?? bp.uri ?? ''}`.trim();
    const src = resolveProjectBuildpack(bp, dirname(project.source));
    switch (src.kind) {
      case 'path': {
        const s = await stageBuildpack(src.path, {
          cwd: dirname(project.source),
          scratchDir: await scratch(),
        });
        staged.push(s);
        return element(s);
      }
      case 'builder':
        return fromBuilder(src.id, src.version, where);
      case 'inline': {
        const s = await writeInlineBuildpack(src, bp, await scratch(), where);
        staged.push(s);
        return element(s);
      }
      default:
        throw new PackfarmError(
          'BUILDPACK_SOURCE_UNSUPPORTED',
          `${where}: ${src.kind} buildpack sources are not supported yet`,
          { hint: 'use a relative directory uri, an inline script, or a buildpack of the builder' },
        );
    }
  };

  const project = input.project;
  const pre = project ? await seq(project.pre, (b) => fromProject(b, project)) : [];
  const post = project ? await seq(project.post, (b) => fromProject(b, project)) : [];
  let groups: Order;
  if (input.flags.length > 0) {
    groups = [{ group: await seq(input.flags, fromFlag) }];
  } else if (project && project.group.length > 0) {
    groups = [{ group: await seq(project.group, (b) => fromProject(b, project)) }];
  } else if (input.builder) {
    groups = platformOrderFromFile(input.builder.order).order;
  } else {
    throw new PackfarmError('NO_BUILDPACKS', 'no buildpacks to run', {
      hint: 'pass --builder, --buildpack DIR|ARCHIVE, or list [[io.buildpacks.group]] in project.toml',
    });
  }
  const order = groups.map((g) => ({ group: [...pre, ...g.group, ...post] }));
  const store = layeredBuildpackStore(staged, input.builder?.store);
  return { store, order };
}

function builderVersionOf(builder: ResolvedBuilder, id: string): string | undefined {
  for (const g of builder.order.order)
    for (const e of g.group) if (e.id === id && e.version) return e.version;
  return undefined;
}

async function seq<T, R>(items: readonly T[], fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (const i of items) out.push(await fn(i));
  return out;
}

/**
 * project.toml `script`: a buildpack whose bin/build is the inline script, run by `shell` (default /bin/sh);
 * bin/detect always passes.
 */
async function writeInlineBuildpack(
  src: { id: string; api: string; shell: string; inline: string },
  bp: ProjectBuildpack,
  dir: string,
  where: string,
): Promise<StagedBuildpack> {
  if (!src.id)
    throw new PackfarmError('INVALID_PROJECT_DESCRIPTOR', `${where}: an inline buildpack needs an id`);
  const version = bp.version ?? '0.0.0';
  const shell = src.shell || '/bin/sh';
  const interpreter = shell.startsWith('/') ? shell : `/usr/bin/env ${shell}`;
  await mkdir(join(dir, 'bin'), { recursive: true });
  await writeFile(
    join(dir, 'buildpack.toml'),
    `api = ${JSON.stringify(src.api)}\n\n[buildpack]\nid = ${JSON.stringify(src.id)}\nversion = ${JSON.stringify(version)}\n`,
  );
  await writeFile(join(dir, 'bin', 'detect'), '#!/bin/sh\nexit 0\n');
  await writeFile(join(dir, 'bin', 'build'), `#!${interpreter}\n${src.inline}\n`);
  await chmod(join(dir, 'bin', 'detect'), 0o755);
  await chmod(join(dir, 'bin', 'build'), 0o755);
  return stageBuildpack(dir, { cwd: dir, scratchDir: dir });
}
