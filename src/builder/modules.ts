import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { z } from 'zod';
import { extractLayer, writeLayer } from '../archive/index.js';
import { type BuildpackDescriptor, readBuildpackDescriptor } from '../buildpack/descriptor.js';
import { type StagedBuildpack, stageBuildpack } from '../buildpack/source.js';
import { readBaseImage, runnableChildren } from '../image/read.js';
import { openImage } from '../image/transport.js';
import type { Digest } from '../oci/digest.js';
import { isIndexMediaType } from '../oci/media-types.js';
import { type Platform, formatPlatform, platformFromSpec } from '../oci/platform.js';
import { ImageIndexSchema } from '../oci/schemas.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';

/**
 * A buildpack as it goes into a builder or a buildpackage: one layer holding /cnb/buildpacks/<id>/<version>,
 * plus what the io.buildpacks.buildpack.layers label says about it. It comes either from a buildpack directory
 * or archive (the layer is written here, deterministically) or from a buildpackage (an image in a registry or
 * an OCI layout, or a .cnb file), whose layers are reused as they are, never re-compressed.
 */

export const BUILDPACKAGE_METADATA_LABEL = 'io.buildpacks.buildpackage.metadata';
export const BUILDPACK_LAYERS = 'io.buildpacks.buildpack.layers';

export interface OrderJson {
  group: { id: string; version: string; optional?: boolean }[];
}

/** One entry of the io.buildpacks.buildpack.layers label (pack's ModuleLayerInfo), in pack's key order. */
export interface LayerInfo {
  api: string;
  stacks?: { id: string; mixins?: string[] }[];
  targets?: {
    os?: string;
    arch?: string;
    variant?: string;
    distros?: { name?: string; version?: string }[];
  }[];
  order?: OrderJson[];
  layerDiffID: string;
  homepage?: string;
  name?: string;
}

export interface BuildpackModule {
  id: string;
  version: string;
  info: LayerInfo;
  /** For the builder metadata's buildpacks list. */
  description?: string;
  /** buildpack.toml, for a module made from a directory or archive. */
  descriptor?: BuildpackDescriptor;
  layer: {
    digest: Digest;
    size: number;
    mediaType: string;
    open: () => Readable | Promise<Readable>;
    mountFrom?: { registry: string; repository: string };
  };
}

export function escapedId(id: string): string {
  return id.replace(/\//g, '_');
}

function orderEntry(e: { id: string; version: string; optional?: boolean | undefined }) {
  return { id: e.id, version: e.version, ...(e.optional ? { optional: true } : {}) };
}

/**
 * A buildpack target as pack's label has it (dist.Target): `os` and `arch` always present (an empty string when
 * the buildpack leaves them open), `variant` and `distros` only when set, each distro's `name`/`version` only
 * when set.
 */
export function targetJson(t: {
  os?: string | undefined;
  arch?: string | undefined;
  variant?: string | undefined;
  distros?: { name?: string | undefined; version?: string | undefined }[] | undefined;
}): NonNullable<LayerInfo['targets']>[number] {
  return {
    os: t.os ?? '',
    arch: t.arch ?? '',
    ...(t.variant ? { variant: t.variant } : {}),
    ...(t.distros && t.distros.length > 0
      ? {
          distros: t.distros.map((d) => ({
            ...(d.name ? { name: d.name } : {}),
            ...(d.version ? { version: d.version } : {}),
          })),
        }
      : {}),
  };
}

/** The label entry for a buildpack read from its buildpack.toml. */
export function layerInfoOf(d: BuildpackDescriptor, diffId: string): LayerInfo {
  const info: LayerInfo = { api: d.api, layerDiffID: diffId };
  const out: LayerInfo = { api: d.api } as LayerInfo;
  if (d.stacks.length > 0)
    out.stacks = d.stacks.map((s) => ({ id: s.id, ...(s.mixins.length > 0 ? { mixins: s.mixins } : {}) }));
  if (d.targetsFrom === 'targets' && d.targets.length > 0) out.targets = d.targets.map(targetJson);
  if (d.order.length > 0) out.order = d.order.map((g) => ({ group: g.group.map(orderEntry) }));
  // Keys in pack's order: api, stacks, targets, order, layerDiffID, homepage, name.
  out.layerDiffID = info.layerDiffID;
  if (d.homepage) out.homepage = d.homepage;
  if (d.name) out.name = d.name;
  return out;
}

/**
 * pack's ModuleInfo, in its key order: what buildpack.toml's [buildpack] says for a directory or archive; id,
 * name, version and homepage only for a buildpack from a buildpackage (all its layers label keeps).
 */
export function moduleInfoJson(m: BuildpackModule) {
  const d = m.descriptor;
  return {
    id: m.id,
    ...(m.info.name ? { name: m.info.name } : {}),
    version: m.version,
    ...(m.description ? { description: m.description } : {}),
    ...(m.info.homepage ? { homepage: m.info.homepage } : {}),
    ...(d && d.keywords.length > 0 ? { keywords: d.keywords } : {}),
    ...(d && d.execEnv.length > 0 ? { 'exec-env': d.execEnv } : {}),
    ...(d && d.licenses.length > 0
      ? { licenses: d.licenses.map((l) => ({ type: l.type ?? '', uri: l.uri ?? '' })) }
      : {}),
    ...(d?.clearEnv ? { 'clear-env': true } : {}),
  };
}

/** A buildpack directory or archive → its layer file (written under `scratch`) and label entry. */
export async function moduleFromSource(
  uri: string,
  opts: { cwd: string; scratch: string; mtime: Date },
): Promise<BuildpackModule> {
  await mkdir(opts.scratch, { recursive: true });
  const s = await stageBuildpack(uri, { cwd: opts.cwd, scratchDir: opts.scratch });
  const file = join(await mkdtemp(join(opts.scratch, 'layer-')), 'layer.tgz');
  const layer = await writeLayer({
    dir: s.dir,
    out: file,
    prefix: `cnb/buildpacks/${escapedId(s.id)}/${s.version}`,
    mtime: opts.mtime,
  });
  return {
    id: s.id,
    version: s.version,
    info: layerInfoOf(s.descriptor, layer.diffId),
    ...(s.descriptor.description ? { description: s.descriptor.description } : {}),
    descriptor: s.descriptor,
    layer: {
      digest: layer.digest,
      size: layer.size,
      mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
      open: () => createReadStream(file),
    },
  };
}

const LayerInfoSchema = z.looseObject({
  api: z.string(),
  layerDiffID: z.string().regex(/^sha256:[0-9a-f]{64}$/),
  stacks: z.array(z.looseObject({ id: z.string(), mixins: z.array(z.string()).optional() })).nullish(),
  targets: z
    .array(
      z.looseObject({
        os: z.string().optional(),
        arch: z.string().optional(),
        variant: z.string().optional(),
        distros: z
          .array(z.looseObject({ name: z.string().optional(), version: z.string().optional() }))
          .optional(),
      }),
    )
    .nullish(),
  order: z
    .array(
      z.looseObject({
        group: z.array(
          z.looseObject({ id: z.string(), version: z.string(), optional: z.boolean().optional() }),
        ),
      }),
    )
    .nullish(),
  homepage: z.string().optional(),
  name: z.string().optional(),
});
const LayersLabelSchema = z.record(z.string(), z.record(z.string(), LayerInfoSchema));
const PackageMetadataSchema = z.looseObject({ id: z.string().min(1), version: z.string().min(1) });

export interface Buildpackage {
  /** The entrypoint buildpack (io.buildpacks.buildpackage.metadata). */
  id: string;
  version: string;
  modules: BuildpackModule[];
}

/** Whether a uri names a buildpackage (an image or a .cnb file) rather than a buildpack dir or archive. */
export function isPackageUri(uri: string): boolean {
  return uri.startsWith('docker://') || uri.startsWith('oci:') || uri.endsWith('.cnb');
}

/**
 * Read a buildpackage for `platform`: `docker://REF`, `oci:DIR[:TAG]` (relative to `cwd`) or a `.cnb` file
 * (an OCI layout in a tar, unpacked under `scratch`). Only manifests and configs are read here; a module's
 * layer is streamed when the caller puts it into its destination.
 */
export async function readBuildpackage(
  uri: string,
  opts: { cwd: string; scratch: string; platform: Platform; insecureRegistries?: string[]; source: string },
): Promise<Buildpackage> {
  let location = uri;
  if (uri.startsWith('oci:') && !uri.startsWith('oci:/')) location = `oci:${resolve(opts.cwd, uri.slice(4))}`;
  if (uri.endsWith('.cnb') && !uri.startsWith('docker://') && !uri.startsWith('oci:')) {
    const file = resolve(opts.cwd, uri.startsWith('file://') ? uri.slice(7) : uri);
    if (!(await stat(file).catch(() => undefined))?.isFile())
      throw new PackfarmError('BUILDPACK_NOT_FOUND', `${opts.source}: ${file} does not exist`, {
        hint: 'make one with packfarm buildpack package NAME --format file',
      });
    await mkdir(opts.scratch, { recursive: true });
    const dir = await mkdtemp(join(opts.scratch, 'cnb-'));
    await extractLayer({ source: createReadStream(file), dest: dir, name: `buildpackage ${file}` });
    location = `oci:${dir}`;
  }
  const opened = await openImage(location, {
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
  });
  let image: Awaited<ReturnType<typeof readBaseImage>>;
  try {
    image = await readBaseImage(opened.store, opened.target, opts.platform);
  } catch (err) {
    if (isPackfarmError(err))
      throw new PackfarmError(err.code, `${opts.source}: buildpackage ${opened.display}: ${err.message}`, {
        cause: err,
        hint: err.hint ?? `the buildpackage must exist for ${formatPlatform(opts.platform)}`,
      });
    throw err;
  }
  const labels = image.config.config?.Labels ?? {};
  const where = `${opts.source}: buildpackage ${opened.display}`;
  const metaText = labels[BUILDPACKAGE_METADATA_LABEL];
  const layersText = labels[BUILDPACK_LAYERS];
  if (metaText === undefined || layersText === undefined)
    throw new PackfarmError(
      'BUILDPACKAGE_INVALID',
      `${where}: no ${metaText === undefined ? BUILDPACKAGE_METADATA_LABEL : BUILDPACK_LAYERS} label: not a buildpackage`,
      { hint: 'make one with packfarm buildpack package (or pack buildpack package)' },
    );
  const meta = parseWith(
    PackageMetadataSchema,
    parseJson(metaText, `${where} label`),
    `${where} label ${BUILDPACKAGE_METADATA_LABEL}`,
  );
  const layers = parseWith(
    LayersLabelSchema,
    parseJson(layersText, `${where} label`),
    `${where} label ${BUILDPACK_LAYERS}`,
  );
  const diffIds = image.config.rootfs.diff_ids;
  const mountFrom = opened.store.registryRepository;
  const modules: BuildpackModule[] = [];
  for (const [id, versions] of Object.entries(layers))
    for (const [version, raw] of Object.entries(versions)) {
      const i = (diffIds as string[]).indexOf(raw.layerDiffID);
      const desc = image.manifest.layers[i];
      if (i < 0 || !desc)
        throw new PackfarmError(
          'BUILDPACKAGE_INVALID',
          `${where}: ${id}@${version}: layer ${raw.layerDiffID} is not in the image`,
        );
      const info: Record<string, unknown> = { api: raw.api };
      if (raw.stacks && raw.stacks.length > 0) info.stacks = raw.stacks;
      if (raw.targets && raw.targets.length > 0) info.targets = raw.targets.map(targetJson);
      if (raw.order && raw.order.length > 0)
        info.order = raw.order.map((g) => ({ group: g.group.map(orderEntry) }));
      info.layerDiffID = raw.layerDiffID;
      if (raw.homepage) info.homepage = raw.homepage;
      if (raw.name) info.name = raw.name;
      modules.push({
        id,
        version,
        info: info as unknown as LayerInfo,
        layer: {
          digest: desc.digest as Digest,
          size: desc.size,
          mediaType: desc.mediaType,
          open: () => opened.store.getBlob(desc.digest as Digest),
          ...(mountFrom ? { mountFrom } : {}),
        },
      });
    }
  if (!modules.some((m) => m.id === meta.id && m.version === meta.version))
    throw new PackfarmError(
      'BUILDPACKAGE_INVALID',
      `${where}: its buildpack ${meta.id}@${meta.version} has no layer`,
    );
  return { id: meta.id, version: meta.version, modules };
}

/** The layers label for a set of modules: ids, then each id's versions, sorted (as Go sorts map keys). */
export function layersLabel(modules: readonly BuildpackModule[]): Record<string, Record<string, LayerInfo>> {
  const out: Record<string, Record<string, LayerInfo>> = {};
  for (const m of [...modules].sort(compareIdThenVersion))
    out[m.id] = { ...(out[m.id] ?? {}), [m.version]: m.info };
  return out;
}

/** By id, then by version (plain string order, as pack sorts a buildpackage's dependencies). */
export function compareIdThenVersion(
  a: { id: string; version: string },
  b: { id: string; version: string },
): number {
  if (a.id !== b.id) return a.id < b.id ? -1 : 1;
  return a.version < b.version ? -1 : a.version > b.version ? 1 : 0;
}

/**
 * Each id@version once (the first wins), sorted by "id@version" as a whole: the order pack adds the layers in
 * (it sorts full names; the layers label's keys sort by id alone, which differs when one id prefixes another).
 */
export function uniqueModules(modules: readonly BuildpackModule[]): BuildpackModule[] {
  const seen = new Map<string, BuildpackModule>();
  for (const m of modules) if (!seen.has(`${m.id}@${m.version}`)) seen.set(`${m.id}@${m.version}`, m);
  const fullName = (m: BuildpackModule) => `${m.id}@${m.version}`;
  return [...seen.values()].sort((a, b) =>
    fullName(a) < fullName(b) ? -1 : fullName(a) > fullName(b) ? 1 : 0,
  );
}

/** Every child a composite's order names must be among `modules`. */
export function checkCompositeChildren(
  modules: readonly BuildpackModule[],
  source: string,
  where: string,
): void {
  const keys = new Set(modules.map((m) => `${m.id}@${m.version}`));
  for (const m of modules)
    for (const g of m.info.order ?? [])
      for (const e of g.group)
        if (!keys.has(`${e.id}@${e.version}`))
          throw new PackfarmError(
            'INVALID_BUILDPACK_SET',
            `${source}: ${m.id}@${m.version} (a composite) names ${e.id}@${e.version}, which is not among the ${where}`,
            { hint: `add ${e.id}@${e.version} (its directory, archive or buildpackage)` },
          );
}

/** A module that declares targets must match `platform` (empty fields match anything). */
export function checkModuleTargets(
  modules: readonly BuildpackModule[],
  platform: Platform,
  source: string,
): void {
  for (const m of modules) {
    const targets = m.info.targets ?? [];
    if (targets.length === 0) continue;
    const ok = targets.some(
      (t) =>
        (!t.os || t.os === platform.os) &&
        (!t.arch || normalizeArch(t.arch) === platform.architecture) &&
        (!t.variant || t.variant === (platform.variant ?? '')),
    );
    if (!ok)
      throw new PackfarmError(
        'BUILDPACK_TARGET_UNSUPPORTED',
        `${source}: buildpack ${m.id}@${m.version} does not support ${formatPlatform(platform)} (its buildpack.toml lists ${targets.map((t) => [t.os, t.arch, t.variant].filter(Boolean).join('/')).join(', ')})`,
        { hint: 'drop the target, or add it to the buildpack’s [[targets]]' },
      );
  }
}

function normalizeArch(arch: string): string {
  return { x86_64: 'amd64', aarch64: 'arm64', ppc64el: 'ppc64le' }[arch] ?? arch;
}

/** The platforms a buildpackage has: an index's runnable children, or the one image's. */
export async function buildpackagePlatforms(
  uri: string,
  opts: { cwd: string; scratch: string; insecureRegistries?: string[] },
): Promise<{ location: string; platforms: Platform[] }> {
  let location = uri;
  if (uri.startsWith('oci:') && !uri.startsWith('oci:/')) location = `oci:${resolve(opts.cwd, uri.slice(4))}`;
  if (uri.endsWith('.cnb') && !uri.startsWith('docker://') && !uri.startsWith('oci:')) {
    const file = resolve(opts.cwd, uri);
    await mkdir(opts.scratch, { recursive: true });
    const dir = await mkdtemp(join(opts.scratch, 'cnb-'));
    await extractLayer({ source: createReadStream(file), dest: dir, name: `buildpackage ${file}` }).catch(
      (err: unknown) => {
        throw new PackfarmError(
          'BUILDPACK_NOT_FOUND',
          `${file}: not a readable .cnb file: ${(err as Error).message}`,
          { cause: err },
        );
      },
    );
    location = `oci:${dir}`;
  }
  const opened = await openImage(location, {
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
  });
  const top = await opened.store.resolve(opened.target);
  if (!top)
    throw new PackfarmError('IMAGE_NOT_FOUND', `buildpackage ${opened.display}: no such image`, {
      hint: 'check the reference (and --insecure-registry for a plain-HTTP registry)',
    });
  if (!isIndexMediaType(top.mediaType))
    return { location, platforms: [(await readBaseImage(opened.store, opened.target)).platform] };
  const stored = await opened.store.getManifest(opened.target);
  const index = parseWith(
    ImageIndexSchema,
    parseJson(stored.bytes.toString('utf8'), opened.display),
    opened.display,
  );
  return {
    location,
    platforms: runnableChildren(index)
      .filter((d) => d.platform)
      .map((d) => platformFromSpec(d.platform!)),
  };
}

/**
 * A buildpackage's buildpacks unpacked for running (a build from a builder.toml directory): each module's
 * layer extracted under `scratch`, its buildpack.toml read. The layers are the package's own, unchanged.
 */
export async function stageBuildpackage(
  uri: string,
  opts: { cwd: string; scratch: string; platform: Platform; insecureRegistries?: string[]; source: string },
): Promise<{ entry: { id: string; version: string }; staged: StagedBuildpack[] }> {
  const pkg = await readBuildpackage(uri, opts);
  await mkdir(opts.scratch, { recursive: true });
  const root = await mkdtemp(join(opts.scratch, 'package-'));
  const staged: StagedBuildpack[] = [];
  for (const m of pkg.modules) {
    await extractLayer({
      source: await m.layer.open(),
      dest: root,
      name: `${opts.source}: ${m.id}@${m.version} layer`,
    });
    const dir = join(root, 'cnb', 'buildpacks', escapedId(m.id), m.version);
    const descriptor = await readBuildpackDescriptor(dir);
    staged.push({ id: descriptor.id, version: descriptor.version, dir: descriptor.dir, descriptor });
  }
  return { entry: { id: pkg.id, version: pkg.version }, staged };
}
