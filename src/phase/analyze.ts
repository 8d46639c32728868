import { digestReference, repositoryName } from '../image/image-name.js';
import { randomBytes } from 'node:crypto';
import { mkdir, rename, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { extractLayer } from '../archive/extract.js';
import type { ImageStore, StoredManifest } from '../image/store.js';
import { matchPlatform, selectIndexChild } from '../image/read.js';
import type { Digest } from '../oci/digest.js';
import { isIndexMediaType, isImageManifestMediaType } from '../oci/media-types.js';
import { formatPlatform, hostPlatform, type Platform, platformFromSpec } from '../oci/platform.js';
import {
  type Descriptor,
  type ImageConfig,
  ImageConfigSchema,
  ImageIndexSchema,
  ImageManifestSchema,
} from '../oci/schemas.js';
import {
  type AnalyzedFile,
  TargetMetadataSchema,
  targetToAnalyzed,
  writeAnalyzedFile,
} from '../platform/files.js';
import { Label, type LifecycleMetadata, LifecycleMetadataSchema } from '../platform/labels.js';
import type { RunImageTarget } from '../platform/target.js';
import { PackfarmError } from '../util/errors.js';
import { type Logger, silentLogger } from '../util/log.js';
import { readCapped } from '../util/stream.js';
import { parseJson, parseWith } from '../util/validate.js';

/** An image the analyzer reads: a store, the tag or digest in it, and the name to show and record. */
export interface AnalyzeImageRef {
  store: ImageStore;
  /** Tag or digest inside the store. */
  target: string;
  /** The name the platform gave (recorded as `[run-image] image`); default: derived from the store. */
  name?: string;
}

export interface AnalyzeOptions {
  /** The previous build of the app (the output image's tag, or `-previous-image`); a missing image is fine. */
  previousImage?: AnalyzeImageRef;
  runImage: AnalyzeImageRef;
  /** Which child of an image index to use (run image and previous image). Default: the host platform. */
  platform?: Platform;
  /**
   * `-skip-layers`: do not restore the previous image's launch SBOM layer. The metadata is still recorded
   * (the restorer needs it for store.toml even when it skips layers).
   */
  skipLayers?: boolean;
  /** Where the previous image's launch SBOM goes (`<layers>/sbom/launch`); without it no SBOM is restored. */
  layersDir?: string;
  /** The layers dir as seen inside images (default /layers). */
  imageLayersDir?: string;
  logger?: Logger;
}

/** What analysis found; `analyzed` is what goes to analyzed.toml. */
export interface AnalyzeResult {
  analyzed: AnalyzedFile;
  /** The previous image's lifecycle label, when it exists and parses. */
  previousMetadata?: LifecycleMetadata;
  previousImage?: { digest: Digest; reference: string };
  runImage: {
    digest: Digest;
    reference: string;
    target: RunImageTarget;
    platform: Platform;
    config: ImageConfig;
  };
}

const MAX_CONFIG_BYTES = 8 * 1024 * 1024;
const UNREADABLE_IMAGE_CODES = new Set([
  'MANIFEST_INVALID',
  'MANIFEST_UNKNOWN',
  'BLOB_UNKNOWN',
  'DIGEST_INVALID',
  'INVALID_JSON',
  'INVALID_DOCUMENT',
  'NO_MATCHING_PLATFORM',
  'TOO_LARGE',
]);

/**
 * The analyzer (Platform API 0.12+): read the previous image's lifecycle metadata, resolve the run image to a
 * digest reference and read its target (os/arch/variant from the config, distro and id from the
 * io.buildpacks.base.* labels). Only manifests and configs are fetched: never a layer.
 *
 * A previous image whose label is missing or unreadable is not an error: the build then starts fresh, with a
 * warning, as the reference lifecycle does.
 */
export async function analyze(opts: AnalyzeOptions): Promise<AnalyzeResult> {
  const logger = opts.logger ?? silentLogger;
  const platform = opts.platform ?? hostPlatform();

  const run = await readImage(opts.runImage, platform);
  if (!run) {
    throw new PackfarmError(
      'RUN_IMAGE_NOT_FOUND',
      `run image ${opts.runImage.store.description}:${opts.runImage.target} not found`,
      { hint: 'check -run-image (or run.toml) and that the image was pushed' },
    );
  }
  const runTarget = targetOf(run.config);
  const runReference = analyzedReference(opts.runImage.store, run.manifest.digest);
  const analyzed: AnalyzedFile = {
    'run-image': {
      reference: runReference,
      image: imageName(opts.runImage),
      target: TargetMetadataSchema.parse(targetToAnalyzed(runTarget)),
    },
  };
  const result: AnalyzeResult = {
    analyzed,
    runImage: {
      digest: run.manifest.digest,
      reference: runReference,
      target: runTarget,
      platform: platformFromSpec(run.config),
      config: run.config,
    },
  };

  if (opts.previousImage) {
    const prev = await readImage(opts.previousImage, platform, logger);
    const name = imageName(opts.previousImage);
    if (!prev) {
      logger.info(`Previous image with name "${name}" not found`);
    } else {
      const reference = analyzedReference(opts.previousImage.store, prev.manifest.digest);
      analyzed.image = { reference };
      result.previousImage = { digest: prev.manifest.digest, reference };
      const meta = previousMetadata(prev.config, name, logger);
      if (meta) {
        result.previousMetadata = meta;
        analyzed.metadata = meta as Record<string, unknown>;
        if (opts.skipLayers) logger.info('Skipping SBOM layer restoration');
        else if (opts.layersDir && meta.sbom?.sha)
          await restoreLaunchSbom({
            image: opts.previousImage,
            read: prev,
            sha: meta.sbom.sha,
            layersDir: opts.layersDir,
            imageLayersDir: opts.imageLayersDir ?? '/layers',
            logger,
          });
      }
    }
  }
  logger.debug(`Run image ${runReference}: target ${formatPlatform(result.runImage.platform)}`);
  return result;
}

/** analyze() then write analyzed.toml atomically. */
export async function analyzeToFile(opts: AnalyzeOptions & { analyzedPath: string }): Promise<AnalyzeResult> {
  const result = await analyze(opts);
  await writeAnalyzedFile(opts.analyzedPath, result.analyzed);
  return result;
}

/** The lifecycle label of a previous image; undefined (with a warning) when absent or unreadable. */
export function previousMetadata(
  config: ImageConfig,
  name: string,
  logger: Logger,
): LifecycleMetadata | undefined {
  const raw = config.config?.Labels?.[Label.lifecycleMetadata];
  if (raw === undefined || raw === '') {
    logger.warn(`Previous image ${name} has no ${Label.lifecycleMetadata} label; building from scratch`);
    return undefined;
  }
  try {
    return parseWith(
      LifecycleMetadataSchema,
      dropNulls(parseJson(raw, `${name} label ${Label.lifecycleMetadata}`)),
      `${name} label ${Label.lifecycleMetadata}`,
    );
  } catch (err) {
    logger.warn(
      `Ignoring the metadata of previous image ${name}: ${(err as Error).message}; building from scratch`,
    );
    return undefined;
  }
}

/**
 * JSON null means "absent" in labels written by Go lifecycles (nil slices and maps); TOML has no null, and the
 * metadata goes to analyzed.toml, so nulls are dropped (array elements too).
 */
function dropNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.filter((x) => x !== null).map(dropNulls);
  if (v !== null && typeof v === 'object') {
    const out: Record<string, unknown> = {};
    for (const [k, val] of Object.entries(v)) if (val !== null) out[k] = dropNulls(val);
    return out;
  }
  return v;
}

/** The run image target: os/arch/variant from the config, id and distro from the io.buildpacks.base.* labels. */
export function targetOf(config: ImageConfig): RunImageTarget {
  const labels = config.config?.Labels ?? {};
  const p = platformFromSpec(config);
  const t: RunImageTarget = { os: p.os, arch: p.architecture };
  if (p.variant) t.variant = p.variant;
  const id = labels[Label.baseId];
  if (id) t.id = id;
  const name = labels[Label.distroName];
  const version = labels[Label.distroVersion];
  if (name || version) t.distro = { name: name ?? '', version: version ?? '' };
  return t;
}

/**
 * analyzed.toml's digest reference: `registry/repo@sha256:…` for a registry store; `<dir>@sha256:…` for a
 * layout, the form the reference lifecycle writes in layout mode (`<layout dir>/<registry>/<repo>/<tag>@<digest>`),
 * which the exporter and the creator take back.
 */
export function analyzedReference(store: ImageStore, digest: Digest): string {
  const ref = digestReference(repositoryName(store), digest);
  return store.registryRepository ? ref : ref.replace(/^oci:/, '');
}

function imageName(ref: AnalyzeImageRef): string {
  if (ref.name) return ref.name;
  const rr = ref.store.registryRepository;
  const sep = ref.target.includes(':') ? '@' : ':';
  return rr
    ? `${rr.registry}/${rr.repository}${sep}${ref.target}`
    : `${ref.store.description}${sep}${ref.target}`;
}

interface ReadImage {
  manifest: StoredManifest;
  layers: Descriptor[];
  config: ImageConfig;
}

/**
 * Bring the previous image's launch SBOM layer back to `<layers>/sbom/launch` (the only layer the analyzer
 * downloads, and only when the label names it). A missing or damaged layer is a warning: SBOMs are
 * regenerated by the build anyway.
 */
async function restoreLaunchSbom(opts: {
  image: AnalyzeImageRef;
  read: ReadImage;
  sha: string;
  layersDir: string;
  imageLayersDir: string;
  logger: Logger;
}): Promise<void> {
  const index = opts.read.config.rootfs.diff_ids.indexOf(opts.sha as Digest);
  const desc = index >= 0 ? opts.read.layers[index] : undefined;
  if (!desc) {
    opts.logger.warn(`previous image has no SBOM layer ${opts.sha}; not restoring the launch SBOM`);
    return;
  }
  const scratch = join(opts.layersDir, `.sbom-${randomBytes(6).toString('hex')}`);
  try {
    const res = await extractLayer({ source: await opts.image.store.getBlob(desc.digest), dest: scratch });
    if (res.diffId !== opts.sha) throw new Error(`its content is ${res.diffId}, expected ${opts.sha}`);
    const from = join(scratch, ...opts.imageLayersDir.split('/').filter(Boolean), 'sbom', 'launch');
    const to = join(opts.layersDir, 'sbom', 'launch');
    await mkdir(join(opts.layersDir, 'sbom'), { recursive: true });
    await rm(to, { recursive: true, force: true });
    await rename(from, to);
    opts.logger.debug(`Restored the launch SBOM from ${opts.sha}`);
  } catch (err) {
    opts.logger.warn(`not restoring the launch SBOM of the previous image: ${(err as Error).message}`);
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

/**
 * An image's manifest and config, picking `platform` from an index. undefined when the target does not exist.
 * With a logger, an unreadable previous image is a warning (a fresh build), not an error.
 */
async function readImage(
  ref: AnalyzeImageRef,
  platform: Platform,
  logger?: Logger,
): Promise<ReadImage | undefined> {
  const source = imageName(ref);
  try {
    if (!(await ref.store.resolve(ref.target))) return undefined;
    let manifest = await ref.store.getManifest(ref.target);
    if (isIndexMediaType(manifest.mediaType)) {
      const index = parseWith(ImageIndexSchema, parseJson(manifest.bytes.toString('utf8'), source), source);
      // With a logger (the previous image), no child for the platform means building from scratch.
      const child = logger ? matchPlatform(index, platform) : selectIndexChild(index, platform, source);
      if (!child) {
        logger?.warn(
          `Previous image ${source} has no image for ${formatPlatform(platform)}; building from scratch`,
        );
        return undefined;
      }
      manifest = await ref.store.getManifest(child.digest);
    }
    if (!isImageManifestMediaType(manifest.mediaType))
      throw new PackfarmError(
        'MANIFEST_INVALID',
        `${source}: ${manifest.mediaType} is not an image manifest`,
      );
    const m = parseWith(ImageManifestSchema, parseJson(manifest.bytes.toString('utf8'), source), source);
    const cfgSource = `${source} config ${m.config.digest}`;
    const bytes = await readCapped(await ref.store.getBlob(m.config.digest), MAX_CONFIG_BYTES, cfgSource);
    const config = parseWith(ImageConfigSchema, parseJson(bytes.toString('utf8'), cfgSource), cfgSource);
    return { manifest, layers: m.layers, config };
  } catch (err) {
    if (!logger || !(err instanceof PackfarmError)) throw err;
    // Only a damaged image means "build from scratch"; auth and network failures must not silently turn
    // into a cold build.
    if (!UNREADABLE_IMAGE_CODES.has(err.code)) throw err;
    logger.warn(`Cannot read previous image ${source}: ${err.message}; building from scratch`);
    return undefined;
  }
}
