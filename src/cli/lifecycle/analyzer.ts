import { isAbsolute, join } from 'node:path';
import { type CacheLocation, openCache } from '../../cache/open.js';
import { openLayoutStore } from '../../image/layout-store.js';
import {
  type ImageLocation,
  ifImageExists,
  type OpenedImage,
  openImage,
  parseImageLocation,
} from '../../image/transport.js';
import { isDigest } from '../../oci/digest.js';
import { parseReference } from '../../oci/reference.js';
import { analyzeToFile } from '../../phase/analyze.js';
import { EXIT, withExitCode } from '../../platform/exit-codes.js';
import { ExperimentalFeature, guardExperimental } from '../../platform/experimental.js';
import { readRunFile } from '../../platform/files.js';
import { chownFiles, ensureOwner, ownerToApply } from '../../platform/ownership.js';
import { type SelectedRunImage, selectRunImage } from '../../platform/run-image.js';
import { type InputDef, LIFECYCLE_INPUTS, type ResolvedInputs } from '../../platform/inputs.js';
import { PackfarmError } from '../../util/errors.js';
import type { Logger } from '../../util/log.js';
import type { CliIO } from '../output.js';
import { phaseUsage, preparePhase } from './common.js';
import type { PhaseCommand } from './types.js';

const I = LIFECYCLE_INPUTS;
/** The analyzer's inputs (platform.md "analyzer", Platform API 0.12–0.15). */
const ANALYZER_INPUTS: readonly InputDef[] = [
  I.analyzed,
  I['cache-dir'],
  I['cache-image'],
  I.daemon,
  I.gid,
  I['insecure-registry'],
  I['launch-cache'],
  I.layers,
  I.layout,
  I['layout-dir'],
  I['log-level'],
  I['no-color'],
  // No flag in the reference analyzer, but CNB_PARALLEL_EXPORT is read (for its warning).
  { ...I.parallel, envOnly: true },
  I['previous-image'],
  I.run,
  I['run-image'],
  I['skip-layers'],
  I.tag,
  I.uid,
];

const SUMMARY =
  'Read the previous image and the run image (manifests and configs only); write analyzed.toml.';

const USAGE = phaseUsage('analyzer', SUMMARY, ANALYZER_INPUTS, [
  'Argument: <image>, the output image (also the previous image unless -previous-image is given).',
  'Images are registry references, or with -layout paths under -layout-dir (<dir>/<registry>/<repo>/<tag>);',
  '-layout is experimental: CNB_EXPERIMENTAL_MODE=warn or quiet allows it (the default, error, refuses it).',
  'Without -run-image the first readable image of run.toml is used (mirrors on the output registry first).',
  'Run as root with -uid/-gid, the layers and cache dirs and analyzed.toml are given to that user.',
  '-daemon is refused: packfarm writes to registries and OCI layouts only.',
  'Exit codes: 0 success, 11 unsupported Platform API, 3 bad arguments or no readable run image,',
  '1 experimental feature refused, 32 analysis failed.',
]);

/** The reference's warning for -launch-cache without -daemon (packfarm has no daemon, so always). */
export function warnLaunchCache(inputs: ResolvedInputs, logger: Logger): void {
  if (inputs.string('launch-cache'))
    logger.warn('Ignoring -launch-cache, only intended for use with -daemon');
}

/** The reference's warning for parallel export without a cache (analyzer and creator). */
export function warnParallelWithoutCache(inputs: ResolvedInputs, logger: Logger): void {
  if (inputs.bool('parallel') && !inputs.string('cache-dir') && !inputs.string('cache-image'))
    logger.warn(
      'Parallel export has been enabled, but it has not taken effect because no cache has been specified.',
    );
}

export function refuseDaemon(inputs: ResolvedInputs, phase: string): void {
  if (inputs.bool('daemon')) {
    throw new PackfarmError(
      'DAEMON_UNSUPPORTED',
      `${phase}: -daemon is not supported: packfarm has no daemon support`,
      {
        exitCode: EXIT.INVALID_ARGS,
        hint: 'export to a registry, or to an OCI layout with -layout -layout-dir DIR',
      },
    );
  }
}

/**
 * The layout path of a reference in layout mode (platform.md "Map an image reference to a path in the
 * layout directory"): `<dir>/<registry>/<repository>/<tag>` or `<dir>/<registry>/<repository>/<alg>/<hex>`.
 * Docker Hub is spelled index.docker.io there, as the reference lifecycle writes it.
 */
export function layoutPathFor(layoutDir: string, reference: string): string {
  const ref = parseReference(reference, { source: 'image reference' });
  const registry = ref.registry === 'docker.io' ? 'index.docker.io' : ref.registry;
  const base = join(layoutDir, registry, ...ref.repository.split('/'));
  if (ref.digest) {
    const [alg, hex] = ref.digest.split(':') as [string, string];
    return join(base, alg, hex);
  }
  return join(base, ref.tag ?? 'latest');
}

export interface ImageOpener {
  open(reference: string, opts?: { create?: boolean }): Promise<OpenedImage>;
  insecureRegistries: string[];
}

/**
 * Where a name lives in layout mode, the same in every phase:
 * - a reference (`registry/repo:tag`, `repo@sha256:…`) → the layout at `layoutPathFor`, holding the image
 *   under its tag (or digest), as the reference lifecycle writes it;
 * - a path with a digest (`<layout dir>/…/<tag>@sha256:…`, what analyzed.toml records) → that layout, by digest;
 * - `oci:DIR[:TAG|@DIGEST]` → as written (packfarm's own form).
 */
export function layoutImageLocation(layoutDir: string, name: string): ImageLocation {
  if (name.startsWith('oci:')) return parseImageLocation(name);
  if (isAbsolute(name)) {
    const at = name.lastIndexOf('@');
    const digest = at > 0 ? name.slice(at + 1) : '';
    if (isDigest(digest)) return { transport: 'oci', dir: name.slice(0, at), digest };
    return { transport: 'oci', dir: name };
  }
  const ref = parseReference(name, { source: 'image reference' });
  const dir = layoutPathFor(layoutDir, name);
  return ref.digest
    ? { transport: 'oci', dir, digest: ref.digest }
    : { transport: 'oci', dir, tag: ref.tag ?? 'latest' };
}

/** Open a layout image; a source whose tag is not in the layout falls back to the layout's only image. */
async function openLayoutImage(loc: ImageLocation, create: boolean): Promise<OpenedImage> {
  if (create || loc.transport !== 'oci' || loc.tag === undefined) return openImage(loc, { create });
  const store = await openLayoutStore(loc.dir);
  const opened: OpenedImage = { ...(await openImage(loc)), store };
  if ((await store.listTags()).includes(loc.tag)) return opened;
  const entries = await store.entries();
  const only = entries.length === 1 ? entries[0] : undefined;
  return only ? { ...opened, target: only.digest } : opened;
}

/**
 * Open images the way the phase's inputs say: a registry, or (-layout) a layout dir per reference. Registry
 * credentials come from the phase's environment (CNB_REGISTRY_AUTH, then DOCKER_CONFIG / ~/.docker).
 */
export function imageOpener(inputs: ResolvedInputs, env?: NodeJS.ProcessEnv): ImageOpener {
  // Flag values, else CNB_INSECURE_REGISTRIES (resolved by the inputs layer).
  const insecureRegistries = inputs
    .list('insecure-registry')
    .flatMap((s) => s.split(/\s+/))
    .filter(Boolean);
  const layout = inputs.bool('layout');
  const layoutDir = inputs.string('layout-dir');
  if (layout && !layoutDir)
    throw new PackfarmError('INVALID_ARGS', '-layout needs -layout-dir (or CNB_LAYOUT_DIR)', {
      exitCode: EXIT.INVALID_ARGS,
    });
  return {
    insecureRegistries,
    open: (reference, opts = {}) =>
      layout
        ? openLayoutImage(layoutImageLocation(layoutDir!, reference), opts.create ?? false)
        : openImage(reference.startsWith('oci:') ? reference : `docker://${reference}`, {
            insecureRegistries,
            ...(env ? { registry: { env } } : {}),
            ...(opts.create ? { create: true } : {}),
          }),
  };
}

/** The cache the flags name: -cache-image wins over -cache-dir (as in the reference lifecycle). */
export async function cacheLocationFrom(
  inputs: ResolvedInputs,
  opener: ImageOpener,
  logger: Logger,
): Promise<CacheLocation | undefined> {
  const image = inputs.string('cache-image');
  const dir = inputs.string('cache-dir');
  if (image) {
    if (dir) logger.warn('both -cache-image and -cache-dir given; using -cache-image');
    const opened = await opener.open(image, { create: true });
    return { kind: 'image', store: opened.store, tag: opened.tag ?? opened.target };
  }
  return dir ? { kind: 'dir', dir } : undefined;
}

async function runAnalyzer(args: string[], io: CliIO, env: NodeJS.ProcessEnv): Promise<number> {
  const ctx = preparePhase({
    name: 'analyzer',
    args,
    io,
    env,
    inputs: () => [...ANALYZER_INPUTS],
    positionals: { min: 1, max: 1, usage: 'one argument, the output image' },
  });
  if (typeof ctx === 'number') return ctx;
  const { inputs, logger } = ctx;
  refuseDaemon(inputs, 'analyzer');
  const image = ctx.positionals[0]!;
  const opener = imageOpener(inputs, env);
  // The reference's order: inputs (run image choice included), the experimental gate, then privileges.
  const run = await resolveRunImage(inputs, opener, image);
  warnLaunchCache(inputs, logger);
  warnParallelWithoutCache(inputs, logger);
  if (inputs.bool('layout')) guardExperimental(ExperimentalFeature.layout, env, logger);
  const owner = ownerToApply(inputs.string('uid'), inputs.string('gid'));
  const layersDir = inputs.require('layers');
  const cacheDir = inputs.string('cache-dir');
  if (owner) await ensureOwner(owner, [layersDir, cacheDir, inputs.string('launch-cache')]);

  return withExitCode(EXIT.ANALYZE_ERROR, async () => {
    const { previousRef, runImage, previous } = await openAnalyzeImages(inputs, opener, image, run);
    if (!previous) logger.info(`Previous image with name "${previousRef}" not found`);
    const analyzedPath = inputs.require('analyzed');
    const result = await analyzeToFile({
      analyzedPath,
      runImage: { store: runImage.store, target: runImage.target, name: run.reference },
      ...(previous
        ? { previousImage: { store: previous.store, target: previous.target, name: previousRef } }
        : {}),
      skipLayers: inputs.bool('skip-layers'),
      layersDir,
      logger,
    });
    // Written as the build user, as the reference analyzer does after dropping to CNB_USER_ID.
    await chownFiles(owner, [analyzedPath, join(layersDir, 'sbom')]);
    const location = await cacheLocationFrom(inputs, opener, logger);
    if (location) {
      // Reading the metadata now surfaces an unreadable cache early, as the reference analyzer does.
      const cache = await openCache(location, result.runImage.platform, { logger });
      const meta = await cache.metadata();
      logger.debug(`cache ${cache.description}: ${meta.buildpacks.length} buildpack(s)`);
    }
    logger.debug(`Run image ${result.runImage.reference}`);
    return EXIT.OK;
  });
}

/**
 * The images analysis reads (the analyzer's and the creator's): access checked first, then the run image and
 * the previous image (-previous-image, else the output image), which may not exist yet — a layout dir that
 * does not exist yet is simply "no previous image".
 */
export async function openAnalyzeImages(
  inputs: ResolvedInputs,
  opener: ImageOpener,
  image: string,
  run: Pick<SelectedRunImage, 'reference'>,
): Promise<{ previousRef: string; runImage: OpenedImage; previous: OpenedImage | undefined }> {
  const previousRef = inputs.string('previous-image') ?? image;
  await ensureRegistryAccess(inputs, opener, {
    read: [previousRef, run.reference],
    write: [image, ...inputs.list('tag')],
  });
  const runImage = await opener.open(run.reference);
  const previous = await ifImageExists(opener.open(previousRef));
  return { previousRef, runImage, previous };
}

/**
 * The reference analyzer's access check, before any work: in registry mode the previous and run images must be
 * readable (a missing previous image is fine) and the output image and `-tag`s writable; the cache image must
 * be writable in either mode. Fails with "failed to ensure registry read/write access to <image>".
 */
export async function ensureRegistryAccess(
  inputs: ResolvedInputs,
  opener: ImageOpener,
  images: { read: string[]; write: string[] },
): Promise<void> {
  const layout = inputs.bool('layout');
  const cacheImage = inputs.string('cache-image');
  const read = layout ? [] : images.read;
  const write = [...(cacheImage ? [cacheImage] : []), ...(layout ? [] : images.write)];
  for (const ref of new Set(read)) {
    try {
      const opened = await opener.open(ref);
      await opened.store.resolve(opened.target);
    } catch (err) {
      throw accessError(ref, 'read', err);
    }
  }
  for (const ref of new Set(write)) {
    try {
      const opened = await opener.open(ref, { create: true });
      await opened.store.checkWriteAccess?.();
    } catch (err) {
      throw accessError(ref, 'read/write', err);
    }
  }
}

function accessError(ref: string, kind: string, err: unknown): PackfarmError {
  return new PackfarmError(
    'REGISTRY_ACCESS_DENIED',
    `failed to ensure registry ${kind} access to ${ref}: ${(err as Error).message}`,
    {
      cause: err,
      hint: 'check the credentials (CNB_REGISTRY_AUTH, DOCKER_CONFIG) and their rights on that repository',
    },
  );
}

/**
 * The run image to analyze: `-run-image` as given, else the first readable image of run.toml (mirrors on the
 * output image's registry first). Nothing readable exits 3, as the reference's input resolution does.
 */
export async function resolveRunImage(
  inputs: ResolvedInputs,
  opener: ImageOpener,
  outputImage: string,
): Promise<SelectedRunImage> {
  const flag = inputs.string('run-image');
  if (flag) return { reference: flag, image: flag, mirrors: [] };
  const runPath = inputs.require('run');
  return selectRunImage({
    run: await readRunFile(runPath),
    runPath,
    outputImage,
    canRead: (ref) => canReadImage(opener, ref),
  });
}

/** Whether an image can be read: it resolves in its store (missing, denied and unreachable all mean no). */
export async function canReadImage(opener: ImageOpener, reference: string): Promise<boolean> {
  try {
    const opened = await opener.open(reference);
    return (await opened.store.resolve(opened.target)) !== undefined;
  } catch {
    return false;
  }
}

export const analyzerCommand: PhaseCommand = {
  name: 'analyzer',
  summary: SUMMARY,
  usage: USAGE,
  run: runAnalyzer,
};
