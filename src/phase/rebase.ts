import { digestReference, repositoryKey } from '../image/image-name.js';
import { Readable } from 'node:stream';
import pLimit from 'p-limit';
import { type BaseImage, readBaseImage } from '../image/read.js';
import { copyImage } from '../image/copy.js';
import { runnableChildren } from '../image/read.js';
import type { ImageStore, PutBlobResult } from '../image/store.js';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { MediaType, isDockerMediaType, isIndexMediaType } from '../oci/media-types.js';
import {
  type Platform,
  formatPlatform,
  platformFromSpec,
  platformToSpec,
  platformsEqual,
} from '../oci/platform.js';
import { type Descriptor, type ImageConfig, ImageIndexSchema } from '../oci/schemas.js';
import { EXIT } from '../platform/exit-codes.js';
import { Label, type LifecycleMetadata, LifecycleMetadataSchema } from '../platform/labels.js';
import { PackfarmError } from '../util/errors.js';
import { canonicalJson } from '../util/json.js';
import { type Logger, silentLogger } from '../util/log.js';
import { parseJson, parseWith } from '../util/validate.js';

/** An image in a store, plus the name it is known by (recorded in labels and compared against them). */
export interface RebaseImageRef {
  store: ImageStore;
  /** Tag or digest in `store`. */
  target: string;
  /** e.g. `registry.example/run:v2` or `oci:/dir:tag`; defaults to `<store>:<target>`. */
  name?: string;
}

/** One more place the rebased image is written to (after the main destination), e.g. an extra tag. */
export interface RebaseExtraDestination {
  store: ImageStore;
  tag: string;
}

export interface RebaseOptions {
  /** The app image (or index) to read. */
  source: RebaseImageRef;
  /**
   * Where the result goes (default: the source store, under the source tag). Without a tag (and with a source
   * given by digest) the result is stored by digest only.
   */
  destination?: { store: ImageStore; tag?: string };
  /** Further tags or repositories to write the same result to (copied by digest; blobs mounted when possible). */
  extraDestinations?: RebaseExtraDestination[];
  /** The new run image (image or index). Without it, `openRunImage` opens the name recorded in the label. */
  runImage?: RebaseImageRef;
  /** Opens a run image by name (used when runImage is not given). */
  openRunImage?: (name: string) => Promise<RebaseImageRef>;
  /** Skip the target, rebasable and run-image-name checks; platform fields then come from the new run image. */
  force?: boolean;
  /**
   * Require the new run image to be the recorded run image's repository (or a mirror's) unless forced
   * (default true; `pack rebase` checks this, the lifecycle rebaser does not).
   */
  checkRunImageName?: boolean;
  /** Blob transfers in flight at once (default 4). */
  concurrency?: number;
  logger?: Logger;
}

export interface RebasedImage {
  digest: Digest;
  mediaType: string;
  size: number;
  platform: string;
  previousDigest: Digest;
  runImage: {
    /** The name the label now records (`runImage.image`). */
    image: string;
    reference: string;
    topLayer: string;
    previousTopLayer: string;
    previousReference: string;
  };
  /** Base layers replaced (old count) and put (new count); app layers kept. */
  baseLayers: { removed: number; added: number };
  appLayers: number;
  blobs: Record<PutBlobResult['outcome'], number>;
}

export interface RebaseResult {
  kind: 'image' | 'index';
  digest: Digest;
  mediaType: string;
  size: number;
  tag?: string;
  images: RebasedImage[];
  /** Children of an index that are not runnable images (attestations …): dropped, they name old digests. */
  dropped: Array<{ digest: Digest; reason: string }>;
}

const BASE_LABEL_PREFIXES = ['io.buildpacks.base.', 'io.buildpacks.stack.'];

function rebaseError(message: string, hint?: string): PackfarmError {
  return new PackfarmError('REBASE_ERROR', message, {
    exitCode: EXIT.REBASE_ERROR,
    ...(hint ? { hint } : {}),
  });
}

function refName(r: RebaseImageRef): string {
  if (r.name) return r.name;
  const rr = r.store.registryRepository;
  const sep = r.target.includes(':') ? '@' : ':';
  return rr ? `${rr.registry}/${rr.repository}${sep}${r.target}` : `${r.store.description}${sep}${r.target}`;
}

function sameStore(a: ImageStore, b: ImageStore): boolean {
  if (a === b) return true;
  const ra = a.registryRepository;
  const rb = b.registryRepository;
  if (ra || rb) return !!ra && !!rb && ra.registry === rb.registry && ra.repository === rb.repository;
  return a.description === b.description;
}

/**
 * Swap the run-image layers under a CNB app image for those of a new run image, by writing a new manifest and
 * config only: app layers keep their blobs (never read), new base layers are mounted or copied from the new run
 * image's store, and the new image (or index, one rebased child per platform) is tagged last.
 */
export async function rebase(opts: RebaseOptions): Promise<RebaseResult> {
  const logger = opts.logger ?? silentLogger;
  const src = opts.source;
  const dstStore = opts.destination?.store ?? src.store;
  const dstTag = opts.destination ? opts.destination.tag : isTag(src.target) ? src.target : undefined;
  const top = await src.store.getManifest(src.target);
  const ctx: RebaseContext = { opts, logger, dstStore, runImages: new Map() };

  let result: RebaseResult;
  if (!isIndexMediaType(top.mediaType)) {
    const image = await rebaseOne(ctx, top.digest, undefined);
    await dstStore.putManifest({ bytes: image.bytes, mediaType: image.result.mediaType, ...tagged(dstTag) });
    result = {
      kind: 'image',
      digest: image.result.digest,
      mediaType: image.result.mediaType,
      size: image.result.size,
      ...tagged(dstTag),
      images: [image.result],
      dropped: [],
    };
  } else {
    result = await rebaseIndex(ctx, top.bytes, top.mediaType, top.digest, dstTag);
  }
  for (const extra of opts.extraDestinations ?? []) {
    // Same registry: blobs are mounted and manifests pushed by digest, so nothing large moves.
    await copyImage({
      src: dstStore,
      srcTarget: result.digest,
      dst: extra.store,
      dstTag: extra.tag,
      all: true,
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
    });
  }
  return result;
}

async function rebaseIndex(
  ctx: RebaseContext,
  bytes: Buffer,
  topMediaType: string,
  topDigest: Digest,
  dstTag: string | undefined,
): Promise<RebaseResult> {
  const src = ctx.opts.source;
  const source = `${src.store.description}@${topDigest}`;
  const index = parseWith(ImageIndexSchema, parseJson(bytes.toString('utf8'), source), source);
  const runnable = new Set(runnableChildren(index).map((d) => d.digest));
  const images: RebasedImage[] = [];
  const dropped: RebaseResult['dropped'] = [];
  const manifests: Descriptor[] = [];
  // One platform after the other: each child is small work (a manifest and a config), and errors stay readable.
  // Every child is checked and written by digest before the index exists, so a refusal leaves no new tag.
  for (const child of index.manifests) {
    if (!runnable.has(child.digest) || !child.platform) {
      dropped.push({ digest: child.digest as Digest, reason: 'not a runnable image (e.g. an attestation)' });
      continue;
    }
    const platform = platformFromSpec(child.platform);
    const image = await rebaseOne(ctx, child.digest as Digest, platform);
    await ctx.dstStore.putManifest({ bytes: image.bytes, mediaType: image.result.mediaType });
    images.push(image.result);
    manifests.push({
      ...child,
      digest: image.result.digest,
      size: image.result.size,
      mediaType: image.result.mediaType,
      // Only differs under --force (a run image of another platform): the index must describe its child.
      ...(platformsEqual(platform, image.platform) ? {} : { platform: platformToSpec(image.platform) }),
    });
  }
  if (images.length === 0) throw rebaseError(`${source}: the index holds no runnable image to rebase`);
  for (const d of dropped) ctx.logger.warn(`Dropping ${d.digest} from the index: ${d.reason}`);
  const newIndex = { ...index, manifests };
  const out = Buffer.from(canonicalJson(newIndex));
  const mediaType = index.mediaType ?? topMediaType;
  const digest = await ctx.dstStore.putManifest({ bytes: out, mediaType, ...tagged(dstTag) });
  return { kind: 'index', digest, mediaType, size: out.length, ...tagged(dstTag), images, dropped };
}

function tagged(tag: string | undefined): { tag?: string } {
  return tag !== undefined ? { tag } : {};
}

function isTag(target: string): boolean {
  return !target.includes(':');
}

interface RebaseContext {
  opts: RebaseOptions;
  logger: Logger;
  dstStore: ImageStore;
  runImages: Map<string, RebaseImageRef>;
}

async function rebaseOne(
  ctx: RebaseContext,
  digest: Digest,
  platform: Platform | undefined,
): Promise<{ bytes: Buffer; result: RebasedImage; platform: Platform }> {
  const { opts, logger } = ctx;
  const src = opts.source;
  const app = await readBaseImage(src.store, digest, platform);
  const appName = `${src.store.description}@${digest}`;
  const labels = app.config.config?.Labels ?? {};
  const raw = labels[Label.lifecycleMetadata];
  if (!raw)
    throw rebaseError(
      `${appName} has no ${Label.lifecycleMetadata} label`,
      'only images built by a CNB lifecycle can be rebased',
    );
  const labelSource = `${appName} label ${Label.lifecycleMetadata}`;
  const rawMd = parseJson(raw, labelSource);
  const md = parseWith(LifecycleMetadataSchema, rawMd, labelSource);
  const force = opts.force === true;
  if (labels[Label.rebasable] === 'false' && !force)
    throw rebaseError(
      `${appName} is labelled ${Label.rebasable}=false: its run image does not promise ABI-compatible updates`,
      'pass --force (-force) to rebase it anyway',
    );

  const oldTop = md.runImage.topLayer;
  const diffIds = app.config.rootfs.diff_ids;
  const baseCount = oldTop ? diffIds.indexOf(oldTop as Digest) + 1 : 0;
  if (baseCount === 0)
    throw rebaseError(
      `${appName}: runImage.topLayer ${oldTop || '(empty)'} in ${Label.lifecycleMetadata} is not one of the image's diff_ids`,
      'the label does not describe this image; rebuild it',
    );

  const runRef = await resolveRunImage(ctx, md, app);
  const runName = refName(runRef);
  const base = await readRunImage(runRef, app.platform, force, runName);
  if (!force) checkTarget(app, base, appName, runName);
  // A name taken from the label itself needs no check.
  if (!force && opts.runImage && opts.checkRunImageName !== false) checkRunImageName(md, runName, appName);

  const appLayers = app.manifest.layers.slice(baseCount);
  const appDiffIds = diffIds.slice(baseCount);
  const ociManifest = !isDockerMediaType(app.mediaType);
  const baseLayers = base.manifest.layers.map((d) => ({
    ...d,
    mediaType: layerTypeFor(d.mediaType, ociManifest),
  }));

  const blobs: Record<PutBlobResult['outcome'], number> = { exists: 0, mounted: 0, uploaded: 0 };
  const limit = pLimit(Math.max(1, opts.concurrency ?? 4));
  const put = (d: Descriptor, from: ImageStore) =>
    limit(async () => {
      const mountFrom = from.registryRepository;
      const r = await ctx.dstStore.putBlob({
        digest: d.digest as Digest,
        size: d.size,
        open: () => from.getBlob(d.digest as Digest),
        ...(mountFrom ? { mountFrom } : {}),
      });
      blobs[r.outcome]++;
    });
  // App layers are already in place when the destination is the source repository; elsewhere on the same
  // registry they are mounted. Only a move between a registry and a layout copies their bytes.
  await Promise.all([
    ...baseLayers.map((d) => put(d, base.store)),
    ...(sameStore(ctx.dstStore, src.store) ? [] : appLayers.map((d) => put(d, src.store))),
  ]);

  const newTop = base.config.rootfs.diff_ids.at(-1) ?? '';
  const reference = digestReference(runName, base.digest);
  const newMd = updatedMetadata(rawMd as Record<string, unknown>, md, { runName, newTop, reference });
  const newLabels: Record<string, string> = {};
  for (const [k, v] of Object.entries(labels))
    if (!BASE_LABEL_PREFIXES.some((p) => k.startsWith(p))) newLabels[k] = v;
  for (const [k, v] of Object.entries(base.config.config?.Labels ?? {}))
    if (BASE_LABEL_PREFIXES.some((p) => k.startsWith(p))) newLabels[k] = v;
  newLabels[Label.lifecycleMetadata] = canonicalJson(newMd.label);

  const config: ImageConfig = {
    ...app.config,
    config: { ...(app.config.config ?? {}), Labels: newLabels },
    rootfs: { type: 'layers', diff_ids: [...base.config.rootfs.diff_ids, ...appDiffIds] },
  };
  // Under --force the target fields follow the new run image (the image now is what its base is); otherwise
  // they were checked to agree and stay as written.
  const target = force && !platformsEqual(app.platform, base.platform) ? base.platform : app.platform;
  if (target !== app.platform) {
    delete config.variant;
    delete config['os.version'];
    Object.assign(config, platformToSpec(target));
  }
  const history = splitHistory(app.config, baseCount);
  if (history && base.config.history && countNonEmpty(base.config.history) === base.manifest.layers.length)
    config.history = [...base.config.history, ...history];
  else delete config.history;
  const configBytes = Buffer.from(canonicalJson(config));
  const configDigest = sha256Digest(configBytes);
  await ctx.dstStore.putBlob({
    digest: configDigest,
    size: configBytes.length,
    open: () => Readable.from([configBytes]),
  });
  const manifest = {
    ...app.manifest,
    config: { ...app.manifest.config, digest: configDigest, size: configBytes.length },
    layers: [...baseLayers, ...appLayers],
  };
  const bytes = Buffer.from(canonicalJson(manifest));
  const newDigest = sha256Digest(bytes);
  logger.info(
    `Rebased ${formatPlatform(app.platform)}: ${baseCount} run-image layer(s) replaced by ${baseLayers.length} from ${runName}; ${appLayers.length} app layer(s) kept`,
  );
  return {
    bytes,
    platform: target,
    result: {
      digest: newDigest,
      mediaType: app.mediaType,
      size: bytes.length,
      platform: formatPlatform(target),
      previousDigest: app.digest,
      runImage: {
        image: newMd.image,
        reference,
        topLayer: newTop,
        previousTopLayer: oldTop,
        previousReference: md.runImage.reference,
      },
      baseLayers: { removed: baseCount, added: baseLayers.length },
      appLayers: appLayers.length,
      blobs,
    },
  };
}

/** The new run image for `platform`; under --force a single image of another platform is taken as it is. */
async function readRunImage(
  runRef: RebaseImageRef,
  platform: Platform,
  force: boolean,
  runName: string,
): Promise<BaseImage> {
  try {
    return await readBaseImage(runRef.store, runRef.target, platform);
  } catch (err) {
    if (!(err instanceof PackfarmError)) throw err;
    if (err.code === 'PLATFORM_MISMATCH' && force) return readBaseImage(runRef.store, runRef.target);
    if (err.code === 'NO_MATCHING_PLATFORM' || err.code === 'PLATFORM_MISMATCH')
      throw rebaseError(
        `new run image ${runName}: ${err.message}`,
        'use a run image (or index) that has the app image platform',
      );
    throw err;
  }
}

/**
 * The lifecycle label with runImage.topLayer and runImage.reference moved to the new run image. When the new
 * run image is not the recorded name or one of its mirrors, it becomes the recorded name (mirrors dropped: they
 * mirrored the old name), so inspect and the next build's analyzer see what the image now runs on. Every other
 * field of the label is kept as it was written.
 */
export function updatedMetadata(
  raw: Record<string, unknown>,
  md: LifecycleMetadata,
  next: { runName: string; newTop: string; reference: string },
): { label: Record<string, unknown>; image: string } {
  const runImage: Record<string, unknown> = {
    ...((raw.runImage as Record<string, unknown> | undefined) ?? {}),
    topLayer: next.newTop,
    reference: next.reference,
  };
  const known = [md.runImage.image, ...(md.runImage.mirrors ?? [])].filter(
    (n): n is string => typeof n === 'string' && n !== '',
  );
  const label: Record<string, unknown> = { ...raw, runImage };
  let image = md.runImage.image ?? '';
  if (!known.includes(next.runName)) {
    image = next.runName;
    runImage.image = next.runName;
    // No mirrors is written as no `mirrors` key, as the exporter writes it: rebasing onto a run image and
    // building on it then give the same label bytes, and so the same digest.
    delete runImage.mirrors;
    if (raw.stack !== undefined) label.stack = { runImage: { image: next.runName } };
  }
  return { label, image };
}

function layerTypeFor(mediaType: string, oci: boolean): string {
  // Same bytes, the manifest's own vocabulary: a mixed Docker/OCI manifest is rejected by some clients.
  if (oci && mediaType === MediaType.dockerLayerGzip) return MediaType.ociLayerGzip;
  if (!oci && mediaType === MediaType.ociLayerGzip) return MediaType.dockerLayerGzip;
  return mediaType;
}

function countNonEmpty(history: NonNullable<ImageConfig['history']>): number {
  return history.filter((h) => h.empty_layer !== true).length;
}

/** History entries above the old base's `baseCount` layers, or undefined when history and layers disagree. */
export function splitHistory(
  config: ImageConfig,
  baseCount: number,
): NonNullable<ImageConfig['history']> | undefined {
  const history = config.history;
  if (!history || countNonEmpty(history) !== config.rootfs.diff_ids.length) return undefined;
  let seen = 0;
  for (let i = 0; i < history.length; i++) {
    if (history[i]?.empty_layer !== true) seen++;
    if (seen === baseCount) return history.slice(i + 1);
  }
  return undefined;
}

async function resolveRunImage(
  ctx: RebaseContext,
  md: LifecycleMetadata,
  app: BaseImage,
): Promise<RebaseImageRef> {
  if (ctx.opts.runImage) return ctx.opts.runImage;
  const names = runImageNames(md);
  if (names.length === 0)
    throw rebaseError(
      `${app.store.description}@${app.digest}: no run image recorded in ${Label.lifecycleMetadata}`,
      'name the new run image with --run-image',
    );
  if (!ctx.opts.openRunImage) throw new Error('rebase: neither runImage nor openRunImage given');
  // A mirror on the app's own registry first: its layers can be mounted rather than copied.
  const appRegistry = ctx.dstStore.registryRepository?.registry;
  const preferred =
    names.find((n) => appRegistry !== undefined && registryOf(n) === appRegistry) ?? names[0]!;
  const cached = ctx.runImages.get(preferred);
  if (cached) return cached;
  const opened = await ctx.opts.openRunImage(preferred);
  ctx.runImages.set(preferred, opened);
  return opened;
}

/** Recorded run image names: `runImage.image` + mirrors, then the deprecated `stack.runImage` copy. */
export function runImageNames(md: LifecycleMetadata): string[] {
  const names = [
    md.runImage.image,
    ...(md.runImage.mirrors ?? []),
    md.stack?.runImage.image,
    ...(md.stack?.runImage.mirrors ?? []),
  ];
  return [...new Set(names.filter((n): n is string => typeof n === 'string' && n !== ''))];
}

function registryOf(name: string): string | undefined {
  const key = repositoryKey(name);
  return key?.startsWith('oci:') ? undefined : key?.split('/')[0];
}

/**
 * The new run image must be one the app was built for: its repository is the recorded run image's or one of
 * its mirrors'. Any tag or digest of that repository is accepted (a newer tag of the same run image is the
 * normal case); another repository needs --force.
 */
function checkRunImageName(md: LifecycleMetadata, runName: string, appName: string): void {
  const names = runImageNames(md);
  if (names.length === 0) return;
  const want = repositoryKey(runName);
  if (want !== undefined && names.some((n) => repositoryKey(n) === want)) return;
  throw rebaseError(
    `${appName}: new run image ${runName} is not the recorded run image (${names.join(', ')}) or one of its mirrors`,
    'pass --force to rebase onto a different run image repository',
  );
}

/**
 * Target data of the new run image against the app image (platform.md: os, architecture, variant, distro name
 * and version). os and architecture must be equal; a variant or distro field the new run image leaves empty
 * matches anything, as the lifecycle treats it.
 */
export function targetMismatches(
  app: { platform: Platform; labels: Record<string, string> },
  run: { platform: Platform; labels: Record<string, string> },
): string[] {
  const a = app.platform;
  const b = run.platform;
  const out: string[] = [];
  if (a.os !== b.os) out.push(`os ${a.os} ≠ ${b.os}`);
  if (a.architecture !== b.architecture) out.push(`architecture ${a.architecture} ≠ ${b.architecture}`);
  else if (b.variant && !platformsEqual(a, b)) out.push(`variant ${a.variant ?? '(none)'} ≠ ${b.variant}`);
  for (const k of [Label.distroName, Label.distroVersion]) {
    const want = app.labels[k];
    const have = run.labels[k];
    if (have && want && want !== have) out.push(`${k} ${want} ≠ ${have}`);
  }
  return out;
}

function checkTarget(app: BaseImage, base: BaseImage, appName: string, runName: string): void {
  const mismatch = targetMismatches(
    { platform: app.platform, labels: app.config.config?.Labels ?? {} },
    { platform: base.platform, labels: base.config.config?.Labels ?? {} },
  );
  if (mismatch.length > 0)
    throw rebaseError(
      `${appName} cannot be rebased onto ${runName}: ${mismatch.join('; ')}`,
      'use a run image for the same target, or --force',
    );
}
