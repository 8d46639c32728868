import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { type MemoryEntry, writeLayerFromEntries } from '../archive/index.js';
import { SUPPORTED_BUILDPACK_APIS } from '../buildpack/api.js';
import { SUPPORTED_PLATFORM_APIS } from '../platform/api.js';
import { type AppendedLayer, assembleImage, transferBaseLayers } from '../image/assemble.js';
import { type BaseImage, readBaseImage, runnableChildren } from '../image/read.js';
import type { RegistryOptions } from '../image/registry-store.js';
import { publishImages } from '../image/publish-index.js';
import type { ImageStore } from '../image/store.js';
import { type OpenedImage, openImage } from '../image/transport.js';
import type { Digest } from '../oci/digest.js';
import { isIndexMediaType } from '../oci/media-types.js';
import {
  type Platform,
  comparePlatforms,
  formatPlatform,
  parsePlatform,
  platformFromSpec,
  platformsEqual,
} from '../oci/platform.js';
import { ImageIndexSchema } from '../oci/schemas.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { stringifyToml } from '../util/toml.js';
import { REPRODUCIBLE_EPOCH } from '../util/time.js';
import { parseJson, parseWith } from '../util/validate.js';
import { type RunImageTarget, anyTargetMatches, formatTarget } from '../platform/target.js';
import { type BuilderToml, readBuilderToml } from './builder-toml.js';
import {
  type BuildpackModule,
  checkCompositeChildren,
  compareIdThenVersion,
  layersLabel,
  moduleInfoJson,
  moduleFromSource,
  uniqueModules,
} from './modules.js';
import { isPackageUri, readBuildpackage } from './buildpackage.js';
import { BUILDER_METADATA_LABEL, BUILDPACK_LAYERS_LABEL, resolveTomlOrder } from './resolve.js';

/**
 * `packfarm builder create`: pack's builder.toml → one builder image per target, laid out as pack lays it out:
 * the build image's layers, then a layer of default directories, one layer per buildpack id@version at
 * /cnb/buildpacks/<id>/<version>, and layers holding /cnb/order.toml, /cnb/stack.toml, /cnb/run.toml and
 * /cnb/build-config/env; the labels io.buildpacks.builder.metadata, io.buildpacks.buildpack.order and
 * io.buildpacks.buildpack.layers; WorkingDir /layers. Several targets give an index (children sorted by
 * platform, pushed by digest, the tag written last). packfarm is its own lifecycle: no /cnb/lifecycle is
 * added and `[lifecycle]` is reported as unused.
 */

export const ORDER_LABEL = 'io.buildpacks.buildpack.order';
export const CREATED_BY = { name: 'packfarm', version: '0.1.0' };

export type BuilderEvent =
  | { type: 'note'; message: string }
  | { type: 'buildpack'; id: string; version: string; diffId: Digest }
  | { type: 'target'; platform: string; digest: Digest }
  | { type: 'done'; reference: string; digest: Digest; mediaType: string };

export interface CreateBuilderOptions {
  /** Where the builder goes (registry reference or oci:DIR[:TAG]). */
  image: string;
  /** Path of builder.toml. */
  config: string;
  /** os/arch[/variant] … (default: builder.toml [[targets]], else every platform of the build image). */
  targets?: string[];
  insecureRegistries?: string[];
  registry?: Partial<RegistryOptions>;
  /** Layer mtimes and config created (default 1980-01-01T00:00:01Z). */
  creationTime?: Date;
  /** Scratch space for staged buildpacks and layer files. */
  scratchDir: string;
  onEvent?: (e: BuilderEvent) => void;
}

export interface BuilderTargetResult {
  platform: Platform;
  digest: Digest;
  size: number;
  mediaType: string;
}

export interface CreateBuilderResult {
  reference: string;
  digest: Digest;
  mediaType: string;
  targets: BuilderTargetResult[];
}

export async function createBuilder(opts: CreateBuilderOptions): Promise<CreateBuilderResult> {
  const emit = opts.onEvent ?? (() => {});
  const toml = await readBuilderToml(opts.config);
  const source = opts.config;
  for (const u of toml.unused)
    emit({
      type: 'note',
      message: `${source}: [${u}] is accepted and not used${u === 'lifecycle' ? ': packfarm is its own lifecycle, no /cnb/lifecycle is added' : ' (not supported yet)'}`,
    });
  if (!toml.buildImage)
    throw new PackfarmError(
      'INVALID_BUILDER_TOML',
      `${source}: build.image: the builder needs a build image`,
      {
        hint: 'add [build] image = "<build image reference or oci:DIR:TAG>" (e.g. from packfarm base create)',
      },
    );
  if (toml.runImageEntries.length === 0)
    throw new PackfarmError('INVALID_BUILDER_TOML', `${source}: run.images: the builder names no run image`, {
      hint: 'add [[run.images]] image = "<run image reference>"',
    });
  const openOpts = {
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
  };
  const build = await openImage(relativeTo(toml.buildImage, source), openOpts);
  const top = await build.store.resolve(build.target);
  if (!top)
    throw new PackfarmError('IMAGE_NOT_FOUND', `${source}: build.image: ${build.display} does not exist`, {
      hint: 'create it first (packfarm base create) or check the reference and --insecure-registry',
    });
  const platforms = await chooseTargets(opts, toml, build, top.mediaType, source);

  await mkdir(opts.scratchDir, { recursive: true });
  const scratch = await mkdtemp(join(opts.scratchDir, 'builder-create-'));
  try {
    const mtime = opts.creationTime ?? REPRODUCIBLE_EPOCH;
    const sources = await sourcesOf(toml, source, {
      scratch,
      mtime,
      ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    });
    const dest = await openImage(opts.image, { ...openOpts, create: true });
    // Everything is resolved and checked for every target before anything is written.
    const perTarget = await Promise.all(
      platforms.map(async (platform) => {
        // pack's metadata lists each [[buildpacks]] entry's buildpack, then a buildpackage's others sorted.
        const listed = firstOfEach((await Promise.all(sources.map((get) => get(platform)))).flat());
        const modules = uniqueModules(listed);
        checkCompositeChildren(modules, source, "builder's [[buildpacks]]");
        return { platform, listed, modules, base: await readBaseImage(build.store, build.target, platform) };
      }),
    );
    // Buildpackages give the same ids on every target: the order is resolved once.
    const order = resolveTomlOrder(toml, perTarget[0]?.modules ?? [], source);
    for (const t of perTarget)
      for (const message of targetSupportNotes(t.modules, order.order, t.base, source))
        emit({ type: 'note', message });
    const seen = new Set<string>();
    for (const m of perTarget.flatMap((t) => t.modules))
      if (!seen.has(m.info.layerDiffID)) {
        seen.add(m.info.layerDiffID);
        emit({ type: 'buildpack', id: m.id, version: m.version, diffId: m.info.layerDiffID as Digest });
      }
    // The targets are written in parallel (two at a time: the work is mostly blob transfers and small layers).
    const { default: pLimit } = await import('p-limit');
    const limit = pLimit(2);
    const results = await Promise.all(
      perTarget.map((t) =>
        limit(async () => {
          const r = await writeTargetBuilder({ ...t, toml, order, dest: dest.store, scratch, mtime });
          emit({ type: 'target', platform: formatPlatform(t.platform), digest: r.digest });
          return r;
        }),
      ),
    );
    results.sort((a, b) => comparePlatforms(a.platform, b.platform));
    const { digest, mediaType } = await publishImages({
      store: dest.store,
      images: results.map((r) => r.digest),
      tags: dest.tag !== undefined ? [dest.tag] : [],
    });
    emit({ type: 'done', reference: dest.display, digest, mediaType });
    return { reference: dest.display, digest, mediaType, targets: results };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/** An `oci:` path in builder.toml is relative to the file, as `uri`s are. */
function relativeTo(ref: string, tomlPath: string): string {
  if (!ref.startsWith('oci:') || ref.startsWith('oci:/')) return ref;
  return `oci:${join(dirname(tomlPath), ref.slice(4))}`;
}

async function chooseTargets(
  opts: CreateBuilderOptions,
  toml: BuilderToml,
  build: OpenedImage,
  mediaType: string,
  source: string,
): Promise<Platform[]> {
  let wanted: Platform[];
  let from: string;
  if (opts.targets && opts.targets.length > 0) {
    wanted = opts.targets.map((t) => parsePlatform(t, '--target'));
    from = '--target';
  } else if (toml.targetEntries.length > 0) {
    wanted = toml.targetEntries.map((t, i) =>
      parsePlatform([t.os, t.arch, ...(t.variant ? [t.variant] : [])].join('/'), `${source}: targets[${i}]`),
    );
    from = `${source}: targets`;
  } else {
    wanted = [];
    from = 'the build image';
  }
  const have: Platform[] = [];
  if (isIndexMediaType(mediaType)) {
    const stored = await build.store.getManifest(build.target);
    const index = parseWith(
      ImageIndexSchema,
      parseJson(stored.bytes.toString('utf8'), build.display),
      build.display,
    );
    for (const d of runnableChildren(index)) if (d.platform) have.push(platformFromSpec(d.platform));
  } else {
    have.push((await readBaseImage(build.store, build.target)).platform);
  }
  if (wanted.length === 0) return dedupe(have);
  for (const w of wanted)
    if (!have.some((h) => platformsEqual(w, h)))
      throw new PackfarmError(
        'TARGET_NOT_IN_BASE',
        `${from}: target ${formatPlatform(w)} is not among the build image's platforms (${build.display} has ${have.map(formatPlatform).join(', ')})`,
        {
          hint: 'build the base for that architecture too (packfarm base create --arch …) or drop the target',
        },
      );
  return dedupe(wanted);
}

function dedupe(ps: Platform[]): Platform[] {
  const out: Platform[] = [];
  for (const p of ps) if (!out.some((o) => platformsEqual(o, p))) out.push(p);
  return out;
}

type ModuleSource = (platform: Platform) => Promise<BuildpackModule[]>;

/**
 * Each [[buildpacks]] entry as a function of the target: a directory or archive gives the same layer for every
 * target (written once), a buildpackage (docker://, oci:, .cnb) is read for each target's platform.
 */
async function sourcesOf(
  toml: BuilderToml,
  source: string,
  opts: { scratch: string; mtime: Date; insecureRegistries?: string[] },
): Promise<ModuleSource[]> {
  const out: ModuleSource[] = [];
  for (const [i, b] of toml.buildpacks.entries()) {
    const field = `${source}: buildpacks[${i}].uri`;
    const named = (m: { id: string; version: string }) => {
      for (const key of ['id', 'version'] as const) {
        const want = b[key];
        if (want !== undefined && want !== m[key])
          throw new PackfarmError(
            'INVALID_BUILDER_TOML',
            `${source}: buildpacks[${i}].${key}: "${want}" but "${b.uri}" holds "${m[key]}"`,
          );
      }
    };
    const rethrow = (err: unknown): never => {
      if (isPackfarmError(err) && !err.message.startsWith(source))
        throw new PackfarmError(err.code, `${field}: ${err.message}`, {
          cause: err,
          ...(err.hint ? { hint: err.hint } : {}),
        });
      throw err;
    };
    if (isPackageUri(b.uri)) {
      out.push(async (platform) => {
        const pkg = await readBuildpackage(b.uri, {
          cwd: dirname(source),
          scratch: opts.scratch,
          platform,
          source: field,
          ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
        }).catch(rethrow);
        named(pkg);
        const isMain = (m: BuildpackModule) => m.id === pkg.id && m.version === pkg.version;
        return [
          ...pkg.modules.filter(isMain),
          ...pkg.modules.filter((m) => !isMain(m)).sort(compareIdThenVersion),
        ];
      });
      continue;
    }
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(b.uri)?.[1]?.toLowerCase();
    if (scheme !== undefined && scheme !== 'file')
      throw new PackfarmError(
        'BUILDER_UNSUPPORTED',
        `${field}: "${b.uri}": ${scheme}: URIs are not supported`,
        {
          hint: 'point uri at a buildpack directory, a .tgz archive, a .cnb file, docker://IMAGE or oci:DIR[:TAG]',
        },
      );
    const m = await moduleFromSource(b.uri, {
      cwd: dirname(source),
      scratch: join(opts.scratch, 'staged'),
      mtime: opts.mtime,
    }).catch(rethrow);
    named(m);
    out.push(async () => [m]);
  }
  return out;
}

interface TargetInput {
  base: BaseImage;
  platform: Platform;
  toml: BuilderToml;
  order: { order: { group: { id: string; version: string; optional?: boolean | undefined }[] }[] };
  /** Sorted by id and version, each once: the layers and the layers label. */
  modules: readonly BuildpackModule[];
  /** In builder.toml's order, each once: the metadata label's `buildpacks`. */
  listed: readonly BuildpackModule[];
  dest: ImageStore;
  scratch: string;
  mtime: Date;
}

function envNumber(env: readonly string[] | null | undefined, name: string, image: string): number {
  const v = (env ?? []).find((e) => e.startsWith(`${name}=`))?.slice(name.length + 1);
  if (v === undefined || !/^\d+$/.test(v))
    throw new PackfarmError(
      'BUILD_IMAGE_INVALID',
      `build image ${image}: ${name} is ${v === undefined ? 'not set' : `"${v}", not a number`}`,
      {
        hint: 'a CNB build image sets CNB_USER_ID and CNB_GROUP_ID in its config Env (packfarm base create does)',
      },
    );
  return Number(v);
}

async function writeTargetBuilder(t: TargetInput): Promise<BuilderTargetResult> {
  const { base, toml } = t;
  const display = `${base.store.description}@${base.digest}`;
  const uid = envNumber(base.config.config?.Env, 'CNB_USER_ID', display);
  const gid = envNumber(base.config.config?.Env, 'CNB_GROUP_ID', display);
  await transferBaseLayers(base, t.dest);

  const small = async (name: string, entries: MemoryEntry[]): Promise<AppendedLayer & { file: string }> => {
    const file = join(t.scratch, `${name}-${formatPlatform(t.platform).replace(/\//g, '-')}.tgz`);
    const l = await writeLayerFromEntries(entries, { out: file, mtime: t.mtime });
    return {
      digest: l.digest,
      size: l.size,
      diffId: l.diffId,
      createdBy: `packfarm builder create: ${name}`,
      file,
    };
  };
  const dirs = await small('dirs', [
    { path: 'workspace', type: 'dir', uid, gid },
    { path: 'layers', type: 'dir', uid, gid },
    ...[
      'cnb',
      'cnb/buildpacks',
      'cnb/extensions',
      'platform',
      'platform/env',
      'cnb/build-config',
      'cnb/build-config/env',
    ].map((p): MemoryEntry => ({ path: p, type: 'dir' })),
  ]);
  const runImages = toml.runImageEntries;
  const first = runImages[0]!;
  const order = await small('order.toml', [
    {
      path: 'cnb/order.toml',
      type: 'file',
      content: stringifyToml({ order: t.order.order.map(orderGroupToml) }),
    },
  ]);
  const stack = await small('stack.toml', [
    { path: 'cnb/stack.toml', type: 'file', content: stringifyToml({ 'run-image': runImageToml(first) }) },
  ]);
  const run = await small('run.toml', [
    { path: 'cnb/run.toml', type: 'file', content: stringifyToml({ images: runImages.map(runImageToml) }) },
  ]);
  const extra: (AppendedLayer & { file: string })[] = [];
  if (toml.buildEnv.length > 0)
    extra.push(
      await small(
        'build-config env',
        toml.buildEnv.map((e) => ({
          path: `cnb/build-config/env/${e.name}${e.suffix && e.suffix !== 'default' ? `.${e.suffix}` : ''}`,
          type: 'file' as const,
          content: e.value,
        })),
      ),
    );
  const delims = toml.buildEnv.filter((e) => e.delim !== undefined);
  if (delims.length > 0)
    extra.push(
      await small(
        'build-config env delims',
        delims.map((e) => ({
          path: `cnb/build-config/env/${e.name}.delim`,
          type: 'file' as const,
          content: e.delim!,
        })),
      ),
    );
  const generated = [dirs, order, stack, run, ...extra];
  for (const m of t.modules)
    await t.dest.putBlob({
      digest: m.layer.digest,
      size: m.layer.size,
      open: m.layer.open,
      ...(m.layer.mountFrom ? { mountFrom: m.layer.mountFrom } : {}),
    });
  for (const l of generated)
    await t.dest.putBlob({ digest: l.digest, size: l.size, open: () => createReadStream(l.file) });

  const metadata = {
    description: toml.description ?? '',
    buildpacks: t.listed.map(moduleInfoJson),
    // pack leaves the list unset (JSON null) when the builder has no extensions.
    extensions: null,
    // pack fills the deprecated stack run image only when builder.toml has a [stack] id (then from the first
    // run image); otherwise it stays empty and readers use `images`.
    stack: { runImage: toml.stackId ? runImageJson(first) : { image: '', mirrors: null } },
    lifecycle: {
      version: CREATED_BY.version,
      api: { buildpack: SUPPORTED_BUILDPACK_APIS.at(-1), platform: SUPPORTED_PLATFORM_APIS.at(-1) },
      apis: {
        buildpack: { deprecated: [], supported: [...SUPPORTED_BUILDPACK_APIS] },
        platform: { deprecated: [], supported: [...SUPPORTED_PLATFORM_APIS] },
      },
    },
    createdBy: CREATED_BY,
    images: runImages.map(runImageJson),
  };
  const labels: Record<string, string> = {
    [BUILDER_METADATA_LABEL]: JSON.stringify(metadata),
    // The order as builder.toml writes it (a missing version stays missing); order.toml has it resolved.
    [ORDER_LABEL]: JSON.stringify(toml.order.map((g) => ({ group: g.group.map(orderEntryJson) }))),
    [BUILDPACK_LAYERS_LABEL]: JSON.stringify(layersLabel(t.modules)),
  };
  // What pack writes for a builder without extensions and a build image without mixins.
  labels['io.buildpacks.buildpack.order-extensions'] = 'null';
  labels['io.buildpacks.extension.layers'] = '{}';
  labels['io.buildpacks.stack.mixins'] = base.config.config?.Labels?.['io.buildpacks.stack.mixins'] ?? 'null';
  if (toml.stackId) labels['io.buildpacks.stack.id'] = toml.stackId;
  const image = assembleImage({
    base,
    layers: [
      dirs,
      ...t.modules.map((m) => ({
        digest: m.layer.digest,
        size: m.layer.size,
        diffId: m.info.layerDiffID as Digest,
        createdBy: `packfarm builder create: buildpack ${m.id}@${m.version}`,
      })),
      order,
      stack,
      run,
      ...extra,
    ],
    config: { WorkingDir: '/layers', Labels: labels },
    created: t.mtime,
    platform: t.platform,
  });
  await t.dest.putBlob({
    digest: image.configDigest,
    size: image.configBytes.length,
    open: () => Readable.from([image.configBytes]),
  });
  const digest = await t.dest.putManifest({ bytes: image.manifestBytes, mediaType: image.mediaType });
  return { platform: t.platform, digest, size: image.manifestBytes.length, mediaType: image.mediaType };
}

function orderEntryJson(e: { id: string; version?: string | undefined; optional?: boolean | undefined }) {
  return {
    id: e.id,
    ...(e.version ? { version: e.version } : {}),
    ...(e.optional ? { optional: true } : {}),
  };
}

function orderGroupToml(g: { group: { id: string; version: string; optional?: boolean | undefined }[] }) {
  return { group: g.group.map(orderEntryJson) };
}

/** pack's RunImageMetadata: `mirrors` is null when builder.toml has no list. */
function runImageJson(r: { image: string; mirrors?: string[] | undefined }) {
  return { image: r.image, mirrors: r.mirrors ?? null };
}

/** TOML has no null: a missing mirrors list is left out. */
function runImageToml(r: { image: string; mirrors?: string[] | undefined }) {
  return { image: r.image, ...(r.mirrors ? { mirrors: r.mirrors } : {}) };
}

/** Each id@version once, the first occurrence kept, in the given order. */
function firstOfEach(modules: readonly BuildpackModule[]): BuildpackModule[] {
  const seen = new Set<string>();
  return modules.filter((m) => {
    const key = `${m.id}@${m.version}`;
    if (seen.has(key)) return false;
    seen.add(key);
    return true;
  });
}

/**
 * Buildpacks whose [[targets]] leave out a builder target. pack refuses such a builder; packfarm keeps the
 * buildpack in that target's image and says so, because the detector passes over a buildpack whose targets
 * do not match the build (as lifecycle does), and a multi-arch builder such as the samples' noble one lists
 * amd64-only buildpacks next to ones for every arch. It is an error only when no order group could pass
 * detection on the target at all (every group needs a buildpack that cannot run there).
 */
function targetSupportNotes(
  modules: readonly BuildpackModule[],
  order: readonly { group: readonly { id: string; version: string; optional?: boolean | undefined }[] }[],
  base: BaseImage,
  source: string,
): string[] {
  const labels = base.config.config?.Labels ?? {};
  const distroName = labels['io.buildpacks.base.distro.name'];
  const distroVersion = labels['io.buildpacks.base.distro.version'];
  const target: RunImageTarget = {
    os: base.platform.os,
    arch: base.platform.architecture,
    ...(base.platform.variant ? { variant: base.platform.variant } : {}),
    ...(distroName ? { distro: { name: distroName, version: distroVersion ?? '' } } : {}),
  };
  const byKey = new Map(modules.map((m) => [`${m.id}@${m.version}`, m]));
  const unsupported = modules.filter(
    (m) => !m.info.order?.length && !anyTargetMatches(target, m.info.targets ?? []),
  );
  if (unsupported.length === 0) return [];
  const cannot = new Set(unsupported.map((m) => `${m.id}@${m.version}`));
  // A composite can run when one of its groups can; `seen` stops a (refused elsewhere) cycle.
  const canRun = (key: string, seen: Set<string>): boolean => {
    if (cannot.has(key)) return false;
    const m = byKey.get(key);
    if (!m?.info.order?.length || seen.has(key)) return true;
    const inner = new Set(seen).add(key);
    return m.info.order.some((g) => groupCanRun(g.group, inner));
  };
  const groupCanRun = (
    group: readonly { id: string; version: string; optional?: boolean | undefined }[],
    seen: Set<string>,
  ) =>
    group.some((e) => canRun(`${e.id}@${e.version}`, seen)) &&
    group.every((e) => e.optional || canRun(`${e.id}@${e.version}`, seen));
  const platform = formatPlatform(base.platform);
  const described = unsupported.map(
    (m) => `${m.id}@${m.version} (${(m.info.targets ?? []).map(formatTarget).join(', ')})`,
  );
  if (!order.some((g) => groupCanRun(g.group, new Set())))
    throw new PackfarmError(
      'BUILDPACK_TARGET_UNSUPPORTED',
      `${source}: no order group can run on ${platform}: ${described.join(', ')} ${unsupported.length === 1 ? 'does' : 'do'} not support it`,
      { hint: 'drop the target, or add it to the buildpacks’ [[targets]]' },
    );
  return described.map(
    (d) =>
      `${source}: ${platform}: buildpack ${d} does not support this target; it stays in the ${platform} builder, where detection fails the groups that need it and goes on`,
  );
}
