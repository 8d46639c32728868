import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { writeLayer } from '../archive/index.js';
import type { BuildpackDescriptor } from '../buildpack/descriptor.js';
import { stageBuildpack } from '../buildpack/source.js';
import type { Digest } from '../oci/digest.js';
import { type Platform, formatPlatform } from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';

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
