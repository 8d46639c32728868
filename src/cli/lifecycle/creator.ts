import { formatApiVersion } from '../../util/api-version.js';
import { createBuildpackStore } from '../../buildpack/descriptor.js';
import { readOrder } from '../../platform/order.js';
import { createHostExecutor } from '../../exec/host.js';
import { ifImageExists } from '../../image/transport.js';
import { hostPlatform } from '../../oci/platform.js';
import { type CreatePhase, PHASE_HEADER, create } from '../../phase/create.js';
import { type ExportOutput, addExportOutput } from '../../phase/export.js';
import { asPhaseError, EXIT } from '../../platform/exit-codes.js';
import { ExperimentalFeature, guardExperimental } from '../../platform/experimental.js';
import { chownFiles, ensureOwner, ownerToApply } from '../../platform/ownership.js';
import { type InputDef, LIFECYCLE_INPUTS } from '../../platform/inputs.js';
import { resolveCreationTime } from '../../util/time.js';
import type { CliIO } from '../output.js';
import {
  ensureRegistryAccess,
  imageOpener,
  refuseDaemon,
  resolveRunImage,
  warnLaunchCache,
  warnParallelWithoutCache,
} from './analyzer.js';
import { phaseUsage, preparePhase } from './common.js';
import { resolveOrderPath } from './detector.js';
import { readProjectMetadata } from './exporter.js';
import { NO_CACHE_WARNING, ownerFrom } from './restorer.js';
import type { PhaseCommand } from './types.js';
import { layerLine } from '../render.js';

const I = LIFECYCLE_INPUTS;
/** The creator's inputs (platform.md "creator"). */
const CREATOR_INPUTS: readonly InputDef[] = [
  I.app,
  I['build-config'],
  I.buildpacks,
  I['cache-dir'],
  I['cache-image'],
  I.daemon,
  I['exec-env'],
  I.gid,
  I['insecure-registry'],
  I['launch-cache'],
  I.launcher,
  I.layers,
  I.layout,
  I['layout-dir'],
  I['log-level'],
  I['no-color'],
  I.order,
  I.parallel,
  I.platform,
  I['previous-image'],
  I['process-type'],
  I['project-metadata'],
  I.report,
  I.run,
  I['run-image'],
  I['skip-restore'],
  I.tag,
  I.uid,
];

const SUMMARY = 'Run analyze, detect, restore, build and export (and the cache) in one process.';

/** Which phase failed decides the exit code, as in the reference creator. */
const PHASE_EXIT: Record<CreatePhase, number> = {
  analyze: EXIT.ANALYZE_ERROR,
  detect: EXIT.DETECT_ERROR,
  restore: EXIT.RESTORE_ERROR,
  build: EXIT.BUILD_ERROR,
  export: EXIT.EXPORT_ERROR,
  cache: EXIT.EXPORT_ERROR,
};

async function runCreator(args: string[], io: CliIO, env: NodeJS.ProcessEnv): Promise<number> {
  const ctx = preparePhase({
    name: 'creator',
    args,
    io,
    env,
    inputs: () => [...CREATOR_INPUTS],
    positionals: { min: 1, max: 1, usage: 'one argument, the output image' },
  });
  if (typeof ctx === 'number') return ctx;
  const { inputs, logger } = ctx;
  refuseDaemon(inputs, 'creator');
  const opener = imageOpener(inputs, env);
  const image = ctx.positionals[0] as string;
  const layersDir = inputs.require('layers');
  const appDir = inputs.require('app');

  const run = await resolveRunImage(inputs, opener, image);
  if (inputs.bool('layout')) guardExperimental(ExperimentalFeature.layout, env, logger);
  if (!inputs.string('cache-dir') && !inputs.string('cache-image')) logger.warn(NO_CACHE_WARNING);
  warnLaunchCache(inputs, logger);
  warnParallelWithoutCache(inputs, logger);
  // As root, hand the volumes to the build user first (the reference creator then runs as that user).
  const owner = ownerToApply(inputs.string('uid'), inputs.string('gid'));
  const cacheDir = inputs.string('cache-dir');
  if (owner) await ensureOwner(owner, [cacheDir, inputs.string('launch-cache'), layersDir]);

  const orderPath = await resolveOrderPath(inputs);

  // The output image, then -tag: more tags of the same repository, or more repositories.
  const outputs: ExportOutput[] = [];
  for (const name of [image, ...inputs.list('tag')]) {
    const o = await opener.open(name, { create: true });
    addExportOutput(outputs, o.store, o.tag ?? 'latest', name);
  }

  let current: CreatePhase = 'analyze';
  try {
    const previousRef = inputs.string('previous-image') ?? image;
    await ensureRegistryAccess(inputs, opener, {
      read: [previousRef, run.reference],
      write: [image, ...inputs.list('tag')],
    });
    const runImage = await opener.open(run.reference);
    const previous = await ifImageExists(opener.open(previousRef));
    const cacheImage = inputs.string('cache-image');
    const cacheTarget = cacheImage ? await opener.open(cacheImage, { create: true }) : undefined;
    const result = await create({
      appDir,
      layersDir,
      platformDir: inputs.require('platform'),
      buildConfigDir: inputs.require('build-config'),
      buildpacks: createBuildpackStore(inputs.require('buildpacks')),
      order: await readOrder(orderPath),
      runImage: {
        store: runImage.store,
        target: runImage.target,
        // The label records the run.toml entry the image came from (a mirror may have been read).
        name: run.image,
        mirrors: run.mirrors,
      },
      outputs,
      ...(previous ? { previousImage: { store: previous.store, target: previous.target } } : {}),
      cache: cacheTarget
        ? { kind: 'image', store: cacheTarget.store, tag: cacheTarget.tag ?? 'latest' }
        : cacheDir
          ? { kind: 'dir', dir: cacheDir }
          : undefined,
      skipRestore: inputs.bool('skip-restore'),
      platform: hostPlatform(),
      platformApi: formatApiVersion(ctx.platformApi),
      createdAt: resolveCreationTime(undefined, env, 'SOURCE_DATE_EPOCH'),
      defaultProcess: inputs.string('process-type') || undefined,
      projectMetadata: await readProjectMetadata(inputs.require('project-metadata')),
      reportPath: inputs.require('report'),
      // Buildpacks see the dirs as given; the image holds them at /workspace and /layers.
      hostPaths: { appDir, layersDir },
      execEnv: inputs.require('exec-env'),
      ...ownerFrom(inputs.string('uid'), inputs.string('gid')),
      executor: createHostExecutor(),
      hostEnv: env,
      logger,
      ...(io.signal ? { signal: io.signal } : {}),
      onEvent: (e) => {
        if (e.type === 'phase-start') {
          current = e.phase;
          const header = PHASE_HEADER[e.phase];
          if (header) logger.info(`===> ${header}`);
        }
        if (e.type === 'export' && e.event.type === 'layer')
          logger.info(layerLine(e.event.name, e.event.outcome));
        if (e.type === 'export' && e.event.type === 'saving') logger.info(`Saving ${e.event.name}...`);
        if (e.type === 'build' && e.event.type === 'buildpack-output') {
          if (e.event.stream === 'stdout') io.out(e.event.line);
          else io.err(e.event.line);
        }
      },
    });
    logger.info(`*** Images (${result.exported.digest.slice(7, 19)}):`);
    for (const tag of result.exported.tags) logger.info(`      ${tag}`);
    logger.info(`*** Digest: ${result.exported.digest}`);
    return EXIT.OK;
  } catch (err) {
    throw asPhaseError(err, PHASE_EXIT[current]);
  } finally {
    // What the creator wrote belongs to the build user, as if it had run as that user.
    await chownFiles(owner, [layersDir, cacheDir, inputs.require('report')]);
  }
}

export const creatorCommand: PhaseCommand = {
  name: 'creator',
  summary: SUMMARY,
  usage: phaseUsage('creator', SUMMARY, CREATOR_INPUTS, [
    '',
    'Argument: <image>, the output image (also the previous image unless -previous-image is given).',
    'Buildpacks run as host processes. The image holds the app at /workspace and the layers at /layers;',
    'process commands that name the -app or -layers dir are rewritten to those paths.',
    '-layout is experimental: CNB_EXPERIMENTAL_MODE=warn or quiet allows it (the default, error, refuses it).',
    'Run as root with -uid/-gid, the layers and cache dirs and everything written there are given to that user.',
    'Exit codes: the failing phase’s (20–22 detect, 32 analyze, 42 restore, 51–52 build, 62 export);',
    '11 unsupported Platform API; 3 bad flags (also -daemon); 1 other.',
  ]),
  run: runCreator,
};
