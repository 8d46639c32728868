import { type ApiVersion, apiAtLeast, formatApiVersion, parseApiVersion } from '../../util/api-version.js';
import { openCache } from '../../cache/open.js';
import { hostPlatform, normalizePlatform, type Platform } from '../../oci/platform.js';
import { previousMetadataFromAnalyzed, restore } from '../../phase/restore.js';
import { EXIT, withExitCode } from '../../platform/exit-codes.js';
import { chownFiles, ensureOwner, ownerToApply } from '../../platform/ownership.js';
import { buildpackLayersDir } from '../../buildpack/layers.js';
import { join } from 'node:path';
import {
  type AnalyzedFile,
  readAnalyzedFile,
  readGroupFile,
  readRunFile,
  runImageTargetOf,
} from '../../platform/files.js';
import { type InputDef, LIFECYCLE_INPUTS } from '../../platform/inputs.js';
import { PackfarmError } from '../../util/errors.js';
import type { CliIO } from '../output.js';
import { type ImageOpener, cacheLocationFrom, canReadImage, imageOpener, refuseDaemon } from './analyzer.js';
import { phaseUsage, preparePhase } from './common.js';
import type { PhaseCommand } from './types.js';

/** The reference lifecycle's warning when a phase that uses a cache is given none. */
export const NO_CACHE_WARNING = 'No cached data will be used, no cache specified.';

const I = LIFECYCLE_INPUTS;

/** The restorer's inputs under a Platform API (platform.md "restorer"; -run arrived with 0.14). */
export function restorerInputs(platformApi: ApiVersion): InputDef[] {
  const defs: InputDef[] = [
    I.analyzed,
    I['cache-dir'],
    I['cache-image'],
    I.daemon,
    I.gid,
    I.group,
    I['insecure-registry'],
    I.layers,
    I.layout,
    I['layout-dir'],
    I['log-level'],
    I['no-color'],
    I['skip-layers'],
    I.uid,
  ];
  if (apiAtLeast(platformApi, '0.14')) defs.push(I.run);
  if (apiAtLeast(platformApi, '0.15')) defs.push(I['exec-env']);
  return defs;
}

const SUMMARY =
  'Restore layer metadata from the previous image and cached layers from the cache; restore store.toml.';

const USAGE = phaseUsage('restorer', SUMMARY, restorerInputs(parseApiVersion('0.15')), [
  "The cache is the one for the run image target recorded in analyzed.toml (another platform's cache is ignored).",
  '-daemon is refused: packfarm has no daemon support.',
  'Exit codes: 0 success, 11 unsupported Platform API, 3 bad arguments, 42 restore failed.',
]);

/** The platform whose cache applies: the run image target of analyzed.toml, else the host's. */
export function cachePlatformOf(analyzed: AnalyzedFile | undefined): Platform {
  const t = runImageTargetOf(analyzed);
  if (!t?.os || !t.arch) return hostPlatform();
  return normalizePlatform({ os: t.os, architecture: t.arch, ...(t.variant ? { variant: t.variant } : {}) });
}

async function runRestorer(args: string[], io: CliIO, env: NodeJS.ProcessEnv): Promise<number> {
  const ctx = preparePhase({ name: 'restorer', args, io, env, inputs: (v) => restorerInputs(v) });
  if (typeof ctx === 'number') return ctx;
  const { inputs, logger } = ctx;
  refuseDaemon(inputs, 'restorer');
  const opener = imageOpener(inputs, env);

  const analyzedPath = inputs.require('analyzed');
  const analyzed = await readAnalyzedFile(analyzedPath, { missingOk: true });
  // Platform API 0.14+: the run image the analyzer chose from run.toml must still be readable (a plain
  // failure, exit 1, as in the reference restorer).
  const chosen = analyzed?.['run-image']?.image;
  if (chosen && apiAtLeast(ctx.platformApi, '0.14'))
    await checkChosenRunImage(inputs.require('run'), chosen, opener);

  // As root: the layers and cache dirs go to the build user first; restored layers end up that user's.
  const owner = ownerToApply(inputs.string('uid'), inputs.string('gid'));
  const layersDir = inputs.require('layers');
  if (owner) await ensureOwner(owner, [layersDir, inputs.string('cache-dir')]);

  return withExitCode(EXIT.RESTORE_ERROR, async () => {
    if (!analyzed) logger.warn(`no analyzed metadata at ${analyzedPath}; restoring from the cache only`);
    const group = await readGroupFile(inputs.require('group'));
    const location = await cacheLocationFrom(inputs, opener, logger);
    const cache = location ? await openCache(location, cachePlatformOf(analyzed), { logger }) : undefined;
    // The reference warns when no cache is given (restorer, exporter, creator); platforms grep for it.
    if (!cache) logger.warn(NO_CACHE_WARNING);
    const previousMetadata = previousMetadataFromAnalyzed(analyzed, analyzedPath, logger);
    const result = await restore({
      layersDir,
      group: group.group,
      ...(previousMetadata ? { previousMetadata } : {}),
      ...(cache ? { cache } : {}),
      platformApi: formatApiVersion(ctx.platformApi),
      skipLayers: inputs.bool('skip-layers'),
      ...ownerFrom(inputs.string('uid'), inputs.string('gid')),
      logger,
    });
    await chownFiles(
      owner,
      result.layers.map((l) => join(buildpackLayersDir(layersDir, l.buildpack), l.layer)),
    );
    logger.debug(`restored ${result.layers.length} layer(s), skipped ${result.skipped.length}`);
    return EXIT.OK;
  });
}

export const restorerCommand: PhaseCommand = {
  name: 'restorer',
  summary: SUMMARY,
  usage: USAGE,
  run: runRestorer,
};

/** A run image named in run.toml that the analyzer chose must still be readable (images outside run.toml are not checked). */
async function checkChosenRunImage(runPath: string, chosen: string, opener: ImageOpener): Promise<void> {
  const run = await readRunFile(runPath);
  if (!run.images.some((e) => e.image === chosen || (e.mirrors ?? []).includes(chosen))) return;
  if (await canReadImage(opener, chosen)) return;
  throw new PackfarmError('RUN_IMAGE_INACCESSIBLE', `selected run image '${chosen}' is not accessible`, {
    hint: 'check the registry credentials for the run image the analyzer recorded in analyzed.toml',
  });
}

/** -uid/-gid (CNB_USER_ID/CNB_GROUP_ID) as numbers; both or neither. */
export function ownerFrom(uid: string | undefined, gid: string | undefined): { uid?: number; gid?: number } {
  if (!uid || !gid) return {};
  const u = Number(uid);
  const g = Number(gid);
  if (!Number.isInteger(u) || u < 0 || !Number.isInteger(g) || g < 0)
    throw new PackfarmError(
      'INVALID_ARGS',
      `-uid/-gid: expected non-negative integers, got "${uid}" and "${gid}"`,
      {
        exitCode: EXIT.INVALID_ARGS,
      },
    );
  return { uid: u, gid: g };
}
