import { readFile } from 'node:fs/promises';
import { type ApiVersion, formatApiVersion } from '../../util/api-version.js';
import { ifImageExists, type OpenedImage } from '../../image/transport.js';
import { EXIT } from '../../platform/exit-codes.js';
import { ExperimentalFeature, guardExperimental } from '../../platform/experimental.js';
import { chownFiles, ensureOwner, ownerToApply } from '../../platform/ownership.js';
import { readAnalyzedFile, readGroupFile, readRunFile, runImageTargetOf } from '../../platform/files.js';
import { type InputDef, LIFECYCLE_INPUTS } from '../../platform/inputs.js';
import type { ProjectMetadata } from '../../platform/labels.js';
import { type ExportOutput, addExportOutput, exportImage, knownCacheDiffIds } from '../../phase/export.js';
import { PackfarmError } from '../../util/errors.js';
import { resolveCreationTime } from '../../util/time.js';
import { parseToml } from '../../util/toml.js';
import type { CliIO } from '../output.js';
import { imageOpener, refuseDaemon, warnLaunchCache } from './analyzer.js';
import { phaseUsage, preparePhase } from './common.js';
import { NO_CACHE_WARNING } from './restorer.js';
import type { PhaseCommand } from './types.js';
import { layerLine } from '../render.js';

const SUMMARY = 'Assemble the app image from the run image and the build output; write report.toml.';

/** The exporter's inputs (platform.md "exporter"). */
export function exporterInputs(_platformApi: ApiVersion): InputDef[] {
  const I = LIFECYCLE_INPUTS;
  return [
    I.analyzed,
    I.app,
    I['cache-dir'],
    I['cache-image'],
    I.daemon,
    I.gid,
    I.group,
    I['insecure-registry'],
    I['launch-cache'],
    I.launcher,
    I.layers,
    I.layout,
    I['layout-dir'],
    I['log-level'],
    I['no-color'],
    I.parallel,
    I['process-type'],
    I['project-metadata'],
    I.report,
    I.run,
    I.uid,
  ];
}

function parseId(text: string | undefined, what: string, fallback: number): number {
  if (text === undefined || text === '') return fallback;
  if (!/^\d+$/.test(text)) {
    throw new PackfarmError('INVALID_ARGS', `-${what}: "${text}" is not a number`, {
      exitCode: EXIT.INVALID_ARGS,
    });
  }
  return Number(text);
}

/**
 * The run image the app image's label records (image and mirrors): the run.toml entry that holds the image
 * the analyzer chose (as image or mirror), else the first entry, as the reference exporter does; without
 * run.toml entries, the image the analyzer chose.
 */
export async function runImageForLabel(
  runPath: string,
  chosen: string,
): Promise<{ name: string; mirrors: string[] }> {
  const run = await readRunFile(runPath);
  const entry =
    run.images.find((e) => e.image === chosen || (e.mirrors ?? []).includes(chosen)) ?? run.images[0];
  return entry ? { name: entry.image, mirrors: entry.mirrors ?? [] } : { name: chosen, mirrors: [] };
}

export async function readProjectMetadata(path: string): Promise<ProjectMetadata> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch {
    return {};
  }
  return parseToml(text, path) as ProjectMetadata;
}

async function run(args: string[], io: CliIO, env: NodeJS.ProcessEnv): Promise<number> {
  const ctx = preparePhase({
    name: 'exporter',
    args,
    io,
    env,
    inputs: exporterInputs,
    positionals: { min: 1, max: 64, usage: 'one or more image names' },
  });
  if (typeof ctx === 'number') return ctx;
  const { inputs, logger, platformApi, positionals } = ctx;
  refuseDaemon(inputs, 'exporter');
  // -layout maps names to the same paths as in the analyzer (layoutImageLocation).
  const opener = imageOpener(inputs, env);
  const open = (name: string, create: boolean): Promise<OpenedImage> => opener.open(name, { create });
  // The reference's order: input checks (the cache warning among them), then the experimental gate.
  if (!inputs.string('cache-dir') && !inputs.string('cache-image')) logger.warn(NO_CACHE_WARNING);
  warnLaunchCache(inputs, logger);
  if (inputs.bool('layout')) guardExperimental(ExperimentalFeature.layout, env, logger);
  // As root, the cache dir goes to the build user first, and what the exporter writes there is that user's.
  const owner = ownerToApply(inputs.string('uid'), inputs.string('gid'));
  if (owner) await ensureOwner(owner, [inputs.string('cache-dir'), inputs.string('launch-cache')]);

  const layersDir = inputs.require('layers');
  const analyzedPath = inputs.require('analyzed');
  const analyzed = await readAnalyzedFile(analyzedPath);
  const group = await readGroupFile(inputs.require('group'));
  const runName = analyzed?.['run-image']?.reference || analyzed?.['run-image']?.image;
  if (!runName) {
    throw new PackfarmError('EXPORT_NO_RUN_IMAGE', `${analyzedPath}: [run-image] reference is missing`, {
      hint: 'run the analyzer with -run-image (or a run.toml) first',
      exitCode: EXIT.EXPORT_ERROR,
    });
  }
  const runImage = await open(runName, false);
  const t = runImageTargetOf(analyzed);

  // The first name decides the repository; further names are more tags (a tag-only difference) or more
  // repositories that get the same blobs and manifest.
  const outputs: ExportOutput[] = [];
  for (const name of positionals) {
    const o = await open(name, true);
    addExportOutput(outputs, o.store, o.tag ?? 'latest', name);
  }
  const previousName = analyzed?.image?.reference;
  const previous = previousName ? await ifImageExists(open(previousName, false)) : undefined;
  if (inputs.bool('layout')) {
    // The reference exporter's layout-mode lines.
    const dirOf = (o: OpenedImage) => (o.location.transport === 'oci' ? o.location.dir : o.display);
    if (previous) logger.info(`Reusing layers from image '${dirOf(previous)}'`);
    const first = await open(positionals[0]!, true);
    logger.info(`Using app image: ${dirOf(first)}`);
  }
  const uid = parseId(inputs.string('uid'), 'uid', 1000);
  const gid = parseId(inputs.string('gid'), 'gid', 1000);
  const createdAt = resolveCreationTime(undefined, env, 'SOURCE_DATE_EPOCH');

  const result = await exportImage({
    layersDir,
    appDir: inputs.require('app'),
    group,
    analyzed,
    runImage: {
      store: runImage.store,
      target: runImage.target,
      ...(await runImageForLabel(inputs.require('run'), analyzed?.['run-image']?.image || runName)),
    },
    ...(t?.os && t.arch
      ? { platform: { os: t.os, architecture: t.arch, ...(t.variant ? { variant: t.variant } : {}) } }
      : {}),
    outputs,
    platformApi: formatApiVersion(platformApi),
    createdAt,
    uid,
    gid,
    defaultProcess: inputs.string('process-type') || undefined,
    projectMetadata: await readProjectMetadata(inputs.require('project-metadata')),
    ...(previous ? { previousImage: { store: previous.store, target: previous.target } } : {}),
    concurrency: inputs.bool('parallel') ? 4 : 2,
    reportPath: inputs.require('report'),
    logger,
    onEvent: (e) => {
      if (e.type === 'layer') logger.info(layerLine(e.name, e.outcome));
      if (e.type === 'saving') logger.info(`Saving ${e.name}...`);
    },
  });
  logger.info(`*** Images (${result.digest.slice(7, 19)}):`);
  for (const tag of result.tags) logger.info(`      ${tag}`);
  logger.info(`*** Digest: ${result.digest}`);

  const cacheDir = inputs.string('cache-dir');
  const cacheImage = inputs.string('cache-image');
  if (cacheDir || cacheImage) {
    const { exportCache } = await import('../../phase/cache.js');
    const cacheTarget = await (cacheImage ? open(cacheImage, true) : undefined);
    await exportCache({
      location: cacheImage
        ? { kind: 'image', store: cacheTarget!.store, tag: cacheTarget!.tag ?? 'latest' }
        : { kind: 'dir', dir: cacheDir! },
      layersDir,
      group: group.group,
      target:
        t?.os && t.arch
          ? { os: t.os, architecture: t.arch, ...(t.variant ? { variant: t.variant } : {}) }
          : { os: 'linux', architecture: 'amd64' },
      creationTime: createdAt,
      knownDiffIds: knownCacheDiffIds(result),
      uid,
      gid,
      logger,
    });
  }
  await chownFiles(owner, [cacheDir, inputs.require('report')]);
  return EXIT.OK;
}

export const exporterCommand: PhaseCommand = {
  name: 'exporter',
  summary: SUMMARY,
  usage: phaseUsage('exporter', SUMMARY, exporterInputs({ major: 0, minor: 15 }), [
    '',
    'Arguments: IMAGE [IMAGE…] — registry references, or oci:DIR[:TAG]; with -layout (experimental, see',
    'CNB_EXPERIMENTAL_MODE), references map to the layout dir <layout-dir>/<registry>/<repository>/<tag>.',
    'The run image is analyzed.toml [run-image] reference.',
    'Exit codes: 0 exported; 62 export error; 11 unsupported Platform API; 3 bad flags (also -daemon); 1 other.',
  ]),
  run,
};
