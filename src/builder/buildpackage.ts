import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { extractLayer } from '../archive/index.js';
import { readBuildpackDescriptor } from '../buildpack/descriptor.js';
import type { StagedBuildpack } from '../buildpack/source.js';
import { readBaseImage, runnableChildren } from '../image/read.js';
import type { RegistryOptions } from '../image/registry-store.js';
import { type OpenedImage, formatImageLocation, openImage } from '../image/transport.js';
import type { Digest } from '../oci/digest.js';
import { isIndexMediaType } from '../oci/media-types.js';
import { type Platform, formatPlatform, platformFromSpec } from '../oci/platform.js';
import { ImageIndexSchema } from '../oci/schemas.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';
import {
  BUILDPACKAGE_METADATA_LABEL,
  BUILDPACK_LAYERS,
  type BuildpackModule,
  type LayerInfo,
  escapedId,
  targetJson,
} from './modules.js';

/**
 * The one reader of buildpackages, wherever a buildpack uri may name one: builder.toml's `[[buildpacks]]`
 * (builder create, and a build from a builder.toml directory), package.toml's `[[dependencies]]`, a build's
 * `--buildpack` and project.toml's buildpack groups. A buildpackage is `docker://REF`, `oci:DIR[:TAG|@DIGEST]`
 * or a `.cnb` file (an OCI layout in a tar); an index is read for one platform (its child for that platform),
 * a single image must be of that platform.
 */

export interface ReadBuildpackageOptions {
  /** Relative `oci:` directories and `.cnb` files resolve against it. */
  cwd: string;
  /** A `.cnb` file is unpacked under it; staged layers are extracted under it. */
  scratch: string;
  platform: Platform;
  insecureRegistries?: string[];
  /** Registry client options (a build's client pool, credentials …). */
  registry?: Partial<RegistryOptions>;
  /** Where the uri was named, for messages: `--buildpack docker://…`, `builder.toml: buildpacks[0].uri` … */
  source: string;
}

export interface Buildpackage {
  /** The entrypoint buildpack (io.buildpacks.buildpackage.metadata). */
  id: string;
  version: string;
  modules: BuildpackModule[];
  /** The image manifest read (the platform's child of an index). */
  digest: Digest;
}

/** Whether a uri names a buildpackage (an image or a .cnb file) rather than a buildpack dir or archive. */
export function isPackageUri(uri: string): boolean {
  return uri.startsWith('docker://') || uri.startsWith('oci:') || isCnbFile(uri);
}

function isCnbFile(uri: string): boolean {
  return uri.endsWith('.cnb') && !uri.startsWith('docker://') && !uri.startsWith('oci:');
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

type OpenOptions = Omit<ReadBuildpackageOptions, 'platform'>;

/** Opened for reading: an `oci:` dir made absolute, a `.cnb` file unpacked (under `scratch`) into a layout. */
async function openBuildpackage(uri: string, opts: OpenOptions): Promise<OpenedImage> {
  let location = uri;
  if (uri.startsWith('oci:') && !uri.startsWith('oci:/')) location = `oci:${resolve(opts.cwd, uri.slice(4))}`;
  if (isCnbFile(uri)) {
    const file = resolve(opts.cwd, uri.startsWith('file://') ? uri.slice(7) : uri);
    if (!(await stat(file).catch(() => undefined))?.isFile())
      throw new PackfarmError('BUILDPACK_NOT_FOUND', `${opts.source}: ${file} does not exist`, {
        hint: 'make one with packfarm buildpack package NAME --format file',
      });
    await mkdir(opts.scratch, { recursive: true });
    const dir = await mkdtemp(join(opts.scratch, 'cnb-'));
    await extractLayer({ source: createReadStream(file), dest: dir, name: `buildpackage ${file}` }).catch(
      (err: unknown) => {
        throw new PackfarmError(
          'BUILDPACKAGE_INVALID',
          `${opts.source}: ${file} is not a readable .cnb file: ${(err as Error).message}`,
          {
            cause: err,
            hint: 'a .cnb file is an OCI image layout in a tar (packfarm buildpack package --format file)',
          },
        );
      },
    );
    location = `oci:${dir}`;
  }
  const opened = await openImage(location, {
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
  }).catch((err: unknown) => {
    throw about(err, `${opts.source}: buildpackage ${uri}`, 'IMAGE_NOT_FOUND');
  });
  const top = await opened.store.resolve(opened.target).catch((err: unknown) => {
    throw about(err, `${opts.source}: buildpackage ${opened.display}`);
  });
  if (!top)
    throw new PackfarmError(
      'IMAGE_NOT_FOUND',
      `${opts.source}: buildpackage ${opened.display}: no such image`,
      {
        hint: 'check the reference (push it with packfarm buildpack package NAME --publish; --insecure-registry for a plain-HTTP registry)',
      },
    );
  return opened;
}

/** `err` with `where` in front of its message (a PackfarmError keeps its code unless `code` is given). */
function about(err: unknown, where: string, code?: 'IMAGE_NOT_FOUND'): unknown {
  if (!isPackfarmError(err)) return err;
  if (err.message.startsWith(where)) return err;
  return new PackfarmError(code ?? err.code, `${where}: ${err.message}`, {
    cause: err,
    ...(err.hint ? { hint: err.hint } : {}),
  });
}

/**
 * A buildpackage for `platform`. Only manifests and configs are read here; a module's layer is streamed when
 * the caller puts it into its destination (or stageBuildpackage extracts it).
 */
export async function readBuildpackage(uri: string, opts: ReadBuildpackageOptions): Promise<Buildpackage> {
  const opened = await openBuildpackage(uri, opts);
  const where = `${opts.source}: buildpackage ${opened.display}`;
  let image: Awaited<ReturnType<typeof readBaseImage>>;
  try {
    image = await readBaseImage(opened.store, opened.target, opts.platform);
  } catch (err) {
    if (isPackfarmError(err, 'PLATFORM_MISMATCH') || isPackfarmError(err, 'NO_MATCHING_PLATFORM'))
      throw new PackfarmError(
        'NO_MATCHING_PLATFORM',
        `${where}: no buildpackage for ${formatPlatform(opts.platform)}: ${err.message}`,
        {
          cause: err,
          hint: `package it for ${formatPlatform(opts.platform)} too (packfarm buildpack package --target ${formatPlatform(opts.platform)} …), or build only the platforms it has`,
        },
      );
    if (isPackfarmError(err))
      throw new PackfarmError(err.code, `${where}: ${err.message}`, {
        cause: err,
        hint: err.hint ?? `the buildpackage must exist for ${formatPlatform(opts.platform)}`,
      });
    throw err;
  }
  const labels = image.config.config?.Labels ?? {};
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
    'BUILDPACKAGE_INVALID',
  );
  const layers = parseWith(
    LayersLabelSchema,
    parseJson(layersText, `${where} label`),
    `${where} label ${BUILDPACK_LAYERS}`,
    'BUILDPACKAGE_INVALID',
  );
  const diffIds = image.config.rootfs.diff_ids as string[];
  const mountFrom = opened.store.registryRepository;
  const modules: BuildpackModule[] = [];
  for (const [id, versions] of Object.entries(layers))
    for (const [version, raw] of Object.entries(versions)) {
      const i = diffIds.indexOf(raw.layerDiffID);
      const desc = image.manifest.layers[i];
      if (i < 0 || !desc)
        throw new PackfarmError(
          'BUILDPACKAGE_INVALID',
          `${where}: label ${BUILDPACK_LAYERS}: ${id}@${version}: layer ${raw.layerDiffID} is not in the image`,
        );
      modules.push({
        id,
        version,
        info: layerInfoFromLabel(raw),
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
  return { id: meta.id, version: meta.version, modules, digest: image.digest };
}

/** A label entry re-keyed in pack's order (api, stacks, targets, order, layerDiffID, homepage, name). */
function layerInfoFromLabel(raw: z.output<typeof LayerInfoSchema>): LayerInfo {
  const info: Record<string, unknown> = { api: raw.api };
  if (raw.stacks && raw.stacks.length > 0) info.stacks = raw.stacks;
  if (raw.targets && raw.targets.length > 0) info.targets = raw.targets.map(targetJson);
  if (raw.order && raw.order.length > 0)
    info.order = raw.order.map((g) => ({
      group: g.group.map((e) => ({
        id: e.id,
        version: e.version,
        ...(e.optional ? { optional: true } : {}),
      })),
    }));
  info.layerDiffID = raw.layerDiffID;
  if (raw.homepage) info.homepage = raw.homepage;
  if (raw.name) info.name = raw.name;
  return info as unknown as LayerInfo;
}

/** The platforms a buildpackage has: an index's runnable children, or the one image's. */
export async function buildpackagePlatforms(
  uri: string,
  opts: { cwd: string; scratch: string; insecureRegistries?: string[]; source?: string },
): Promise<{ location: string; platforms: Platform[] }> {
  const opened = await openBuildpackage(uri, { ...opts, source: opts.source ?? 'buildpack inspect' });
  // Handed back to readBuildpackage: a .cnb file is not unpacked twice.
  const shown = opened.location.transport === 'oci' ? formatImageLocation(opened.location) : uri;
  const top = await opened.store.resolve(opened.target);
  if (top && !isIndexMediaType(top.mediaType))
    return { location: shown, platforms: [(await readBaseImage(opened.store, opened.target)).platform] };
  const stored = await opened.store.getManifest(opened.target);
  const index = parseWith(
    ImageIndexSchema,
    parseJson(stored.bytes.toString('utf8'), opened.display),
    opened.display,
  );
  return {
    location: shown,
    platforms: runnableChildren(index)
      .filter((d) => d.platform)
      .map((d) => platformFromSpec(d.platform!)),
  };
}

/**
 * A buildpackage's buildpacks unpacked for running (a build's `--buildpack`, project.toml, or a builder.toml
 * directory): each module's layer extracted under `scratch`, its buildpack.toml read and checked against the
 * label. The layers are the package's own, unchanged.
 */
export async function stageBuildpackage(
  uri: string,
  opts: ReadBuildpackageOptions,
): Promise<{ entry: { id: string; version: string }; staged: StagedBuildpack[]; digest: Digest }> {
  const pkg = await readBuildpackage(uri, opts);
  await mkdir(opts.scratch, { recursive: true });
  const root = await mkdtemp(join(opts.scratch, 'package-'));
  const where = `${opts.source}: buildpackage ${uri}`;
  const staged: StagedBuildpack[] = [];
  for (const m of pkg.modules) {
    let diffId: string;
    try {
      ({ diffId } = await extractLayer({
        source: await m.layer.open(),
        dest: root,
        name: `${where}: ${m.id}@${m.version} layer`,
      }));
    } catch (err) {
      if (isPackfarmError(err, 'UNSAFE_LAYER_ENTRY')) throw about(err, where);
      throw new PackfarmError(
        'BUILDPACKAGE_INVALID',
        `${where}: ${m.id}@${m.version}: layer ${m.layer.digest} cannot be read: ${(err as Error).message}`,
        { cause: err, hint: 're-make the buildpackage (packfarm buildpack package) and push it again' },
      );
    }
    // What runs must be what the label names (the builder create path checks the same by reusing the blob).
    if (diffId !== m.info.layerDiffID)
      throw new PackfarmError(
        'BUILDPACKAGE_INVALID',
        `${where}: ${m.id}@${m.version}: layer ${m.layer.digest} holds ${diffId}, but label ${BUILDPACK_LAYERS} says ${m.info.layerDiffID}`,
        { hint: 're-make the buildpackage (packfarm buildpack package) and push it again' },
      );
    const dir = join(root, 'cnb', 'buildpacks', escapedId(m.id), m.version);
    const descriptor = await readBuildpackDescriptor(dir).catch((err: unknown) => {
      throw new PackfarmError(
        'BUILDPACKAGE_INVALID',
        `${where}: ${m.id}@${m.version}: its layer ${m.info.layerDiffID} has no readable /cnb/buildpacks/${escapedId(m.id)}/${m.version}/buildpack.toml: ${(err as Error).message}`,
        { cause: err, hint: 'each buildpack layer holds /cnb/buildpacks/<id>/<version>/ (pack’s layout)' },
      );
    });
    if (descriptor.id !== m.id || descriptor.version !== m.version)
      throw new PackfarmError(
        'BUILDPACKAGE_INVALID',
        `${where}: label ${BUILDPACK_LAYERS} says ${m.id}@${m.version}, but its layer's buildpack.toml says ${descriptor.id}@${descriptor.version}`,
      );
    staged.push({ id: descriptor.id, version: descriptor.version, dir: descriptor.dir, descriptor });
  }
  return { entry: { id: pkg.id, version: pkg.version }, staged, digest: pkg.digest };
}
