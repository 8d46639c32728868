import { createReadStream, createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { basename, dirname, isAbsolute, join, relative, resolve } from 'node:path';
import type { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import tar from 'tar-stream';
import { z } from 'zod';
import { extractLayer } from '../archive/extract.js';
import { type BuildpackStore, createBuildpackStore } from '../buildpack/descriptor.js';
import { type StagedBuildpack, layeredBuildpackStore, stageBuildpack } from '../buildpack/source.js';
import { readBaseImage } from '../image/read.js';
import type { RegistryOptions } from '../image/registry-store.js';
import { type ImageLocation, openImage, parseImageLocation } from '../image/transport.js';
import type { Digest } from '../oci/digest.js';
import { isIndexMediaType, layerCompression } from '../oci/media-types.js';
import { type Platform, hostPlatform } from '../oci/platform.js';
import { type OrderFile, readOrderFile, readRunFile } from '../platform/files.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { type Logger, silentLogger } from '../util/log.js';
import { parseToml } from '../util/toml.js';
import { type BuilderToml, readBuilderToml } from './builder-toml.js';
import { isPackageUri, stageBuildpackage } from './buildpackage.js';

/**
 * `--builder DIR|REF`: where the builder's buildpacks, order and run image come from. Three shapes:
 *
 *   DIR with builder.toml      pack's builder definition; its buildpacks are staged from their `uri`s
 *   DIR with order.toml        laid out like a builder's /cnb (order.toml, buildpacks/, run.toml); used in place
 *   image (REF or oci:DIR)     a builder image; /cnb/order.toml, /cnb/run.toml and /cnb/buildpacks/** are
 *                              extracted from its layers, downloading only the layers that hold them
 */
export interface ResolvedBuilder {
  /** What the user named, for messages. */
  name: string;
  /** The builder's buildpacks. */
  store: BuildpackStore;
  /** The builder's order ([[order]] groups). */
  order: OrderFile;
  /** Run image reference first, then mirrors; [] when the builder names none. */
  runImages: string[];
  /** Platforms builder.toml's `[[targets]]` declares (a build's default targets); [] when none. */
  targets: Platform[];
  /**
   * The image buildpacks run in (the oci executor's root filesystem): builder.toml's `[build] image`, or,
   * for a builder image, the builder image itself (`image` then says which manifest was used).
   */
  buildImage?: string;
  /** For a builder image: the image manifest read (the platform's child of an index) and its platform. */
  image?: { digest: Digest; platform: Platform };
  /**
   * A builder.toml naming buildpackages (docker://, oci:, .cnb): its buildpacks were read for one platform
   * (`ResolveBuilderOptions.platform`), so another target resolves it again for its own.
   */
  perPlatform?: boolean;
  /** Removes what was extracted. */
  cleanup(): Promise<void>;
}

export interface ResolveBuilderOptions {
  cwd: string;
  scratchDir: string;
  insecureRegistries?: string[];
  /** Further registry options (a client pool, credentials …). */
  registry?: Partial<RegistryOptions>;
  /** For a builder image that is an index: the child to use (default: the host's platform). */
  platform?: Platform;
  logger?: Logger;
}

/** pack's builder image label: run images (`images`, or legacy `stack.runImage`). */
export const BUILDER_METADATA_LABEL = 'io.buildpacks.builder.metadata';
/** pack's label mapping each buildpack id → version → the diffID of the layer holding it. */
export const BUILDPACK_LAYERS_LABEL = 'io.buildpacks.buildpack.layers';

export async function resolveBuilder(spec: string, opts: ResolveBuilderOptions): Promise<ResolvedBuilder> {
  if (spec === '')
    throw new PackfarmError('BUILDER_NOT_FOUND', 'builder: the name is empty', {
      hint: 'give a builder image reference, oci:DIR[:TAG], or a directory with builder.toml or order.toml',
    });
  if (spec.startsWith('oci:') || spec.startsWith('docker://')) return fromImage(spec, opts);
  const path = resolve(opts.cwd, spec);
  const st = await stat(path).catch(() => undefined);
  if (st?.isDirectory()) return fromDirectory(spec, path, opts);
  if (st?.isFile() && basename(path).endsWith('.toml')) return fromBuilderToml(spec, path, opts);
  if (st || looksLikePath(spec))
    throw new PackfarmError(
      'BUILDER_NOT_FOUND',
      `builder "${spec}": ${path} ${st ? 'is not a directory or builder.toml' : 'does not exist'}`,
      {
        hint: 'give a builder image reference, oci:DIR[:TAG], or a directory with builder.toml or order.toml',
      },
    );
  return fromImage(spec, opts);
}

/** Whether resolveBuilder takes `spec` as an image (rather than a directory or builder.toml). */
export async function isBuilderImage(spec: string, cwd: string): Promise<boolean> {
  if (spec.startsWith('oci:') || spec.startsWith('docker://')) return true;
  if (await stat(resolve(cwd, spec)).catch(() => undefined)) return false;
  return !looksLikePath(spec);
}

function looksLikePath(spec: string): boolean {
  return spec === '.' || spec === '..' || /^(\.{1,2}\/|\/|~)/.test(spec);
}

async function fromDirectory(
  spec: string,
  dir: string,
  opts: ResolveBuilderOptions,
): Promise<ResolvedBuilder> {
  if (await pathExists(join(dir, 'builder.toml')))
    return fromBuilderToml(spec, join(dir, 'builder.toml'), opts);
  if (await pathExists(join(dir, 'order.toml'))) return fromCnbDir(spec, dir);
  // A builder's root filesystem (or a copy of it) with /cnb inside.
  if (await pathExists(join(dir, 'cnb', 'order.toml'))) return fromCnbDir(spec, join(dir, 'cnb'));
  throw new PackfarmError(
    'BUILDER_INVALID',
    `builder "${spec}": ${dir} has neither builder.toml nor order.toml`,
    {
      hint: 'a builder directory holds pack’s builder.toml, or order.toml + buildpacks/ (+ run.toml) like a builder’s /cnb',
    },
  );
}

// ---------------------------------------------------------------------------------------------------------
// A /cnb-like directory

async function fromCnbDir(spec: string, dir: string): Promise<ResolvedBuilder> {
  const order = await readOrderFile(join(dir, 'order.toml'));
  const buildpacksDir = join(dir, 'buildpacks');
  if (!(await stat(buildpacksDir).catch(() => undefined))?.isDirectory())
    throw new PackfarmError(
      'BUILDER_INVALID',
      `builder "${spec}": ${buildpacksDir} is missing (order.toml names buildpacks that must be there)`,
      { hint: 'buildpacks are looked up as buildpacks/<id with / as _>/<version>/buildpack.toml' },
    );
  return {
    name: spec,
    store: createBuildpackStore(buildpacksDir),
    order,
    runImages: await runImagesFromCnb(dir),
    targets: [],
    // Used in place: nothing was extracted.
    cleanup: async () => {},
  };
}

/** run.toml's first image (+ mirrors), else the legacy stack.toml `[run-image]`. */
async function runImagesFromCnb(cnbDir: string): Promise<string[]> {
  const run = await readRunFile(join(cnbDir, 'run.toml'));
  const first = run.images[0];
  if (first) return [first.image, ...(first.mirrors ?? [])];
  const path = join(cnbDir, 'stack.toml');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return [];
  }
  const StackSchema = z.looseObject({
    'run-image': z
      .looseObject({ image: z.string().optional(), mirrors: z.array(z.string()).optional() })
      .optional(),
  });
  const parsed = StackSchema.safeParse(parseToml(text, path));
  const image = parsed.success ? parsed.data['run-image']?.image : undefined;
  return image ? [image, ...(parsed.data?.['run-image']?.mirrors ?? [])] : [];
}

// ---------------------------------------------------------------------------------------------------------
// builder.toml

async function fromBuilderToml(
  spec: string,
  path: string,
  opts: ResolveBuilderOptions,
): Promise<ResolvedBuilder> {
  const toml = await readBuilderToml(path);
  await mkdir(opts.scratchDir, { recursive: true });
  const scratch = await mkdtemp(join(opts.scratchDir, 'builder-'));
  const cleanup = () => rm(scratch, { recursive: true, force: true });
  try {
    const staged = await stageBuilderBuildpacks(toml, path, scratch, opts);
    const order = resolveTomlOrder(toml, staged, path);
    return {
      name: spec,
      store: layeredBuildpackStore(staged),
      order,
      runImages: toml.runImages,
      targets: toml.targets,
      ...(toml.buildImage ? { buildImage: toml.buildImage } : {}),
      ...(toml.buildpacks.some((b) => isPackageUri(b.uri)) ? { perPlatform: true } : {}),
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

async function stageBuilderBuildpacks(
  toml: BuilderToml,
  path: string,
  scratch: string,
  opts: ResolveBuilderOptions,
): Promise<StagedBuildpack[]> {
  const base = dirname(path);
  const staged: StagedBuildpack[] = [];
  for (const [i, b] of toml.buildpacks.entries()) {
    const field = `buildpacks[${i}].uri`;
    if (isPackageUri(b.uri)) {
      // A buildpackage (docker://, oci:, .cnb): its buildpacks for the platform being built.
      const pkg = await stageBuildpackage(b.uri, {
        cwd: base,
        scratch,
        platform: opts.platform ?? hostPlatform(),
        source: `${path}: ${field}`,
        ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
        ...(opts.registry ? { registry: opts.registry } : {}),
      });
      for (const key of ['id', 'version'] as const) {
        const want = b[key];
        if (want !== undefined && want !== pkg.entry[key])
          throw new PackfarmError(
            'INVALID_BUILDER_TOML',
            `${path}: buildpacks[${i}].${key}: "${want}" but the buildpackage holds "${pkg.entry[key]}"`,
          );
      }
      staged.push(...pkg.staged);
      continue;
    }
    const scheme = /^([a-z][a-z0-9+.-]*):/i.exec(b.uri)?.[1]?.toLowerCase();
    if (scheme !== undefined && scheme !== 'file' && !(scheme.length === 1 && process.platform === 'win32'))
      throw new PackfarmError(
        'BUILDER_UNSUPPORTED',
        `${path}: ${field}: "${b.uri}": ${scheme}: buildpack URIs are not supported`,
        {
          hint: 'point uri at a buildpack directory, a .tgz/.tar archive or a buildpackage (docker://, oci:, .cnb), relative to builder.toml',
        },
      );
    let s: StagedBuildpack;
    try {
      s = await stageBuildpack(b.uri, { cwd: base, scratchDir: scratch });
    } catch (err) {
      if (isPackfarmError(err))
        throw new PackfarmError(err.code, `${path}: ${field}: ${err.message}`, {
          cause: err,
          hint: err.hint,
        });
      throw err;
    }
    for (const key of ['id', 'version'] as const) {
      const want = b[key];
      if (want !== undefined && want !== s[key])
        throw new PackfarmError(
          'INVALID_BUILDER_TOML',
          `${path}: buildpacks[${i}].${key}: "${want}" but ${s.descriptor.path} says "${s[key]}"`,
        );
    }
    staged.push(s);
  }
  return staged;
}

/** Versions filled in (the only staged version of an ID), and every top-level entry checked to exist. */
export function resolveTomlOrder(
  toml: BuilderToml,
  staged: readonly { id: string; version: string }[],
  path: string,
): OrderFile {
  const versions = new Map<string, Set<string>>();
  for (const s of staged) {
    const set = versions.get(s.id) ?? new Set<string>();
    set.add(s.version);
    versions.set(s.id, set);
  }
  if (toml.order.length === 0)
    throw new PackfarmError('INVALID_BUILDER_TOML', `${path}: order: the builder has no [[order]] groups`, {
      hint: 'add [[order]] [[order.group]] id = "…" for the buildpacks to try',
    });
  const order = toml.order.map((g, i) => ({
    group: g.group.map((e, j) => {
      const field = `order[${i}].group[${j}]`;
      const have = [...(versions.get(e.id) ?? [])];
      if (have.length === 0)
        throw new PackfarmError(
          'INVALID_BUILDER_TOML',
          `${path}: ${field}: buildpack ${e.id} is not among the builder's [[buildpacks]]`,
          { hint: `add [[buildpacks]] uri = "<dir or archive of ${e.id}>"` },
        );
      let version = e.version;
      if (version === undefined) {
        if (have.length > 1)
          throw new PackfarmError(
            'INVALID_BUILDER_TOML',
            `${path}: ${field}: buildpack ${e.id} has several versions (${have.sort().join(', ')}); say which`,
            { hint: `add version = "…" to ${field}` },
          );
        version = have[0]!;
      } else if (!have.includes(version)) {
        throw new PackfarmError(
          'INVALID_BUILDER_TOML',
          `${path}: ${field}: buildpack ${e.id}@${version} is not among the builder's [[buildpacks]] (it has ${have.join(', ')})`,
        );
      }
      return { id: e.id, version, optional: e.optional };
    }),
  }));
  return { order };
}

// ---------------------------------------------------------------------------------------------------------
// A builder image

const BuilderMetadataSchema = z.looseObject({
  images: z.array(z.looseObject({ image: z.string(), mirrors: z.array(z.string()).nullish() })).nullish(),
  stack: z
    .looseObject({
      runImage: z.looseObject({ image: z.string(), mirrors: z.array(z.string()).nullish() }).nullish(),
    })
    .nullish(),
});

const BuildpackLayersSchema = z.record(
  z.string(),
  z.record(z.string(), z.looseObject({ layerDiffID: z.string() })),
);

/** Tar names (normalised) whose presence in a layer settles what /cnb/order.toml is from there down. */
const ORDER_DECIDERS = new Set([
  'cnb/order.toml',
  'cnb/.wh.order.toml',
  'cnb/.wh..wh..opq',
  '.wh.cnb',
  '.wh..wh..opq',
]);

const KEPT = new Set([
  'cnb',
  'cnb/buildpacks',
  'cnb/order.toml',
  'cnb/run.toml',
  'cnb/stack.toml',
  'cnb/.wh.buildpacks',
  'cnb/.wh.order.toml',
  'cnb/.wh.run.toml',
  'cnb/.wh.stack.toml',
  'cnb/.wh..wh..opq',
  '.wh.cnb',
  '.wh..wh..opq',
]);

function keepEntry(name: string): boolean {
  return KEPT.has(name) || name.startsWith('cnb/buildpacks/');
}

function normalizeEntryName(name: string): string {
  return name
    .split('/')
    .filter((p) => p !== '' && p !== '.')
    .join('/');
}

function relocate(loc: ImageLocation, cwd: string): ImageLocation {
  // parseImageLocation resolves a relative oci: directory against the process; the caller's cwd is meant.
  if (loc.transport !== 'oci') return loc;
  return { ...loc, dir: resolve(cwd, relative(process.cwd(), loc.dir)) };
}

/** Where a builder image is; a relative oci: directory is taken relative to `cwd`. */
export function builderImageLocation(spec: string, cwd: string): ImageLocation {
  const raw = parseImageLocation(spec, 'builder');
  return spec.startsWith('oci:') && !isAbsolute(spec.slice(4)) ? relocate(raw, cwd) : raw;
}

async function fromImage(spec: string, opts: ResolveBuilderOptions): Promise<ResolvedBuilder> {
  const log = opts.logger ?? silentLogger;
  const loc = builderImageLocation(spec, opts.cwd);
  const opened = await openImage(loc, {
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
  });
  const top = await opened.store.resolve(opened.target);
  if (!top)
    throw new PackfarmError('BUILDER_NOT_FOUND', `builder ${opened.display}: no such image`, {
      hint: 'check the reference (and --insecure-registry for a plain-HTTP registry)',
    });
  // An index is narrowed to one platform; a single image is taken as it is unless a platform was asked for.
  const platform = opts.platform ?? (isIndexMediaType(top.mediaType) ? hostPlatform() : undefined);
  const image = await readBaseImage(opened.store, opened.target, platform);
  const labels = image.config.config?.Labels ?? {};

  await mkdir(opts.scratchDir, { recursive: true });
  const scratch = await mkdtemp(join(opts.scratchDir, 'builder-'));
  const cleanup = () => rm(scratch, { recursive: true, force: true });
  try {
    const root = join(scratch, 'root');
    const tars = join(scratch, 'layers');
    await mkdir(tars, { recursive: true });
    const layers = image.manifest.layers;
    const diffIds = image.config.rootfs.diff_ids;
    const bpDiffIds = buildpackLayerDiffIds(labels[BUILDPACK_LAYERS_LABEL], opened.display, log);
    const fetched = new Map<number, string>();
    const fetchLayer = async (i: number): Promise<boolean> => {
      const layer = layers[i]!;
      const file = join(tars, `${i}.tar`);
      log.debug(`builder ${opened.display}: reading layer ${layer.digest} (${layer.size} bytes)`);
      const decides = await filterLayer({
        blob: await opened.store.getBlob(layer.digest as Digest),
        mediaType: layer.mediaType,
        out: file,
        label: `${opened.display} layer ${layer.digest}`,
      });
      fetched.set(i, file);
      return decides;
    };
    if (bpDiffIds) {
      // Topmost layer first, until one settles /cnb/order.toml; buildpack layers come from the label.
      for (let i = layers.length - 1; i >= 0; i--) if (await fetchLayer(i)) break;
      for (let i = 0; i < layers.length; i++)
        if (!fetched.has(i) && bpDiffIds.has(diffIds[i] ?? '')) await fetchLayer(i);
    } else {
      // Without pack's layer label nothing says where /cnb is: every layer is read (only /cnb is kept).
      for (let i = 0; i < layers.length; i++) await fetchLayer(i);
    }
    log.debug(`builder ${opened.display}: read ${fetched.size} of ${layers.length} layers`);
    for (const i of [...fetched.keys()].sort((a, b) => a - b))
      await extractLayer({
        source: createReadStream(fetched.get(i)!),
        dest: root,
        name: `${opened.display} layer ${layers[i]!.digest}`,
      });
    await rm(tars, { recursive: true, force: true });

    const cnb = join(root, 'cnb');
    if (!(await pathExists(join(cnb, 'order.toml'))))
      throw new PackfarmError(
        'BUILDER_INVALID',
        `builder ${opened.display}: the image has no /cnb/order.toml`,
        {
          hint: 'is this a builder image? A builder holds /cnb/order.toml and /cnb/buildpacks/',
        },
      );
    const order = await readOrderFile(join(cnb, 'order.toml'));
    const runImages =
      runImagesFromLabel(labels[BUILDER_METADATA_LABEL], opened.display, log) ??
      (await runImagesFromCnb(cnb));
    return {
      name: spec,
      store: createBuildpackStore(join(cnb, 'buildpacks')),
      order,
      runImages,
      targets: [],
      buildImage: spec,
      image: { digest: image.digest, platform: image.platform },
      cleanup,
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

function parseLabel<S extends z.ZodType>(
  schema: S,
  text: string | undefined,
  what: string,
  log: Logger,
): z.output<S> | undefined {
  if (text === undefined) return undefined;
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    log.warn(`${what}: not valid JSON; ignored`);
    return undefined;
  }
  const parsed = schema.safeParse(json);
  if (!parsed.success) {
    log.warn(`${what}: unexpected content; ignored`);
    return undefined;
  }
  return parsed.data;
}

function buildpackLayerDiffIds(
  text: string | undefined,
  image: string,
  log: Logger,
): Set<string> | undefined {
  const parsed = parseLabel(BuildpackLayersSchema, text, `${image} label ${BUILDPACK_LAYERS_LABEL}`, log);
  if (!parsed) return undefined;
  const out = new Set<string>();
  for (const versions of Object.values(parsed))
    for (const info of Object.values(versions)) out.add(info.layerDiffID);
  return out.size > 0 ? out : undefined;
}

function runImagesFromLabel(text: string | undefined, image: string, log: Logger): string[] | undefined {
  const meta = parseLabel(BuilderMetadataSchema, text, `${image} label ${BUILDER_METADATA_LABEL}`, log);
  const first = meta?.images?.find((i) => i.image !== '');
  if (first) return [first.image, ...(first.mirrors ?? [])];
  const legacy = meta?.stack?.runImage;
  if (legacy?.image) return [legacy.image, ...(legacy.mirrors ?? [])];
  return undefined;
}

/**
 * Copy the /cnb entries a build needs (order.toml, run.toml, stack.toml, buildpacks/**, and the whiteouts that
 * hide them) from one layer blob into a plain tar file. Returns whether the layer settles /cnb/order.toml
 * for everything below it (it has the file, or a whiteout that removes it).
 */
async function filterLayer(opts: {
  blob: Readable;
  mediaType: string;
  out: string;
  label: string;
}): Promise<boolean> {
  const compression = layerCompression(opts.mediaType);
  if (compression !== 'gzip' && compression !== 'none') {
    opts.blob.destroy();
    throw new PackfarmError(
      'UNSUPPORTED_LAYER_COMPRESSION',
      `${opts.label}: layers of type ${opts.mediaType} are not supported`,
      { hint: 'packfarm reads gzip-compressed and uncompressed tar layers' },
    );
  }
  const extract = tar.extract();
  const pack = tar.pack();
  let decides = false;
  extract.on('entry', (header, stream, next) => {
    const name = normalizeEntryName(header.name);
    if (!keepEntry(name)) {
      stream.on('end', () => next());
      stream.resume();
      return;
    }
    if (ORDER_DECIDERS.has(name) || (name === 'cnb' && header.type !== 'directory')) decides = true;
    // A truncated entry destroys its stream (and then the packer's entry) with the error that also rejects
    // `reading`; pipe() does not forward it, so both are heard here rather than crash the process as an
    // unheard 'error' event.
    stream.on('error', () => {});
    const sink = pack.entry(header, (err) => next(err ?? undefined));
    sink.on('error', () => {});
    stream.pipe(sink);
  });
  extract.on('finish', () => pack.finalize());
  const reading = (
    compression === 'gzip' ? pipeline(opts.blob, createGunzip(), extract) : pipeline(opts.blob, extract)
  ).catch((err: unknown) => {
    pack.destroy(err as Error);
    throw err;
  });
  const writing = pipeline(pack, createWriteStream(opts.out)).catch((err: unknown) => {
    extract.destroy(err as Error);
    throw err;
  });
  try {
    await Promise.all([reading, writing]);
  } catch (err) {
    await Promise.allSettled([reading, writing]);
    if (isPackfarmError(err)) throw err;
    throw new PackfarmError(
      'INVALID_LAYER',
      `${opts.label}: cannot read the layer: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  return decides;
}
