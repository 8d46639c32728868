import { join } from 'node:path';
import { type CacheLocation, openCache } from '../../cache/open.js';
import { type OpenedImage, openImage } from '../../image/transport.js';
import { parseReference } from '../../oci/reference.js';
import { analyzeToFile } from '../../phase/analyze.js';
import { EXIT } from '../../platform/exit-codes.js';
import { readRunFile } from '../../platform/files.js';
import { type InputDef, LIFECYCLE_INPUTS, type ResolvedInputs } from '../../platform/inputs.js';
import { PackfarmError, isPackfarmError } from '../../util/errors.js';
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
  'Images are registry references, or with -layout paths under -layout-dir (<dir>/<registry>/<repo>/<tag>).',
  '-daemon is refused: packfarm writes to registries and OCI layouts only.',
  'Exit codes: 0 success, 11 unsupported Platform API, 3 bad arguments, 32 analysis failed.',
]);

/** Raise a phase's failures with its exit code (argument errors keep theirs). */
export async function withPhaseExitCode<T>(code: number, fn: () => Promise<T>): Promise<T> {
  try {
    return await fn();
  } catch (err) {
    if (isPackfarmError(err) && err.exitCode === 1) {
      throw new PackfarmError(err.code, err.message, {
        exitCode: code,
        ...(err.hint ? { hint: err.hint } : {}),
        cause: err,
      });
    }
    throw err;
  }
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

/** Open images the way the phase's inputs say: a registry, or (-layout) a layout dir per reference. */
export function imageOpener(inputs: ResolvedInputs): ImageOpener {
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
        ? openImage(
            { transport: 'oci', dir: layoutPathFor(layoutDir!, reference) },
            { create: opts.create ?? false },
          )
        : openImage(reference.startsWith('oci:') ? reference : `docker://${reference}`, {
            insecureRegistries,
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
  const opener = imageOpener(inputs);

  return withPhaseExitCode(EXIT.ANALYZE_ERROR, async () => {
    let runRef = inputs.string('run-image');
    if (!runRef) {
      const runFile = await readRunFile(inputs.require('run'));
      runRef = runFile.images[0]?.image;
      if (!runRef)
        throw new PackfarmError('RUN_IMAGE_MISSING', `no run image: ${inputs.require('run')} lists none`, {
          exitCode: EXIT.INVALID_ARGS,
          hint: 'pass -run-image REF or provide run.toml with [[images]]',
        });
    }
    const run = await opener.open(runRef);
    const previousRef = inputs.string('previous-image') ?? image;
    const previous = await opener.open(previousRef).catch((err: unknown) => {
      // A layout dir that does not exist yet is simply "no previous image".
      if (isPackfarmError(err) && inputs.bool('layout')) return undefined;
      throw err;
    });
    const result = await analyzeToFile({
      analyzedPath: inputs.require('analyzed'),
      runImage: { store: run.store, target: run.target },
      ...(previous ? { previousImage: { store: previous.store, target: previous.target } } : {}),
      skipLayers: inputs.bool('skip-layers'),
      layersDir: inputs.require('layers'),
      logger,
    });
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

export const analyzerCommand: PhaseCommand = {
  name: 'analyzer',
  summary: SUMMARY,
  usage: USAGE,
  run: runAnalyzer,
};
