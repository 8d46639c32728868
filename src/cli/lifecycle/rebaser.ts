import type { ApiVersion } from '../../util/api-version.js';
import type { OpenedImage } from '../../image/transport.js';
import { type RebaseImageRef, rebase } from '../../phase/rebase.js';
import { asPhaseError, EXIT } from '../../platform/exit-codes.js';
import { type InputDef, LIFECYCLE_INPUTS } from '../../platform/inputs.js';
import { writeReport } from '../../platform/report.js';
import { PackfarmError } from '../../util/errors.js';
import type { CliIO } from '../output.js';
import { imageOpener, refuseDaemon } from './analyzer.js';
import { phaseUsage, preparePhase } from './common.js';
import type { PhaseCommand } from './types.js';

const SUMMARY = 'Put an app image on a new run image (manifest and config only); write report.toml.';

/** `-force` / CNB_FORCE_REBASE (platform.md "rebaser", Platform API 0.12+). */
const FORCE: InputDef = {
  name: 'force',
  kind: 'bool',
  env: 'CNB_FORCE_REBASE',
  default: false,
  help: 'rebase even when the target data differs or the image is not rebasable',
};

/** The rebaser's inputs (platform.md "rebaser"). It has no -layers flag; CNB_LAYERS_DIR places report.toml. */
export function rebaserInputs(_platformApi: ApiVersion): InputDef[] {
  const I = LIFECYCLE_INPUTS;
  return [
    I.daemon,
    FORCE,
    I.gid,
    I['insecure-registry'],
    { ...I.layers, envOnly: true },
    I.layout,
    I['layout-dir'],
    I['log-level'],
    I['no-color'],
    I['previous-image'],
    I.report,
    I['run-image'],
    I.uid,
  ];
}

function invalid(message: string, hint?: string): PackfarmError {
  return new PackfarmError('INVALID_ARGS', message, {
    exitCode: EXIT.INVALID_ARGS,
    ...(hint ? { hint } : {}),
  });
}

function registryOf(o: OpenedImage): string | undefined {
  return o.store.registryRepository?.registry;
}

async function run(args: string[], io: CliIO, env: NodeJS.ProcessEnv): Promise<number> {
  const ctx = preparePhase({
    name: 'rebaser',
    args,
    io,
    env,
    inputs: rebaserInputs,
    positionals: { min: 1, max: 64, usage: 'one or more image names' },
  });
  if (typeof ctx === 'number') return ctx;
  const { inputs, logger, positionals } = ctx;
  refuseDaemon(inputs, 'rebaser');
  // -layout maps names to the same paths as in the other phases (layoutImageLocation).
  const opener = imageOpener(inputs, env);
  const open = (name: string, create: boolean) => opener.open(name, { create });

  const [first, ...more] = positionals as [string, ...string[]];
  const previousName = inputs.string('previous-image') || first;
  const outputs = [];
  for (const name of positionals) outputs.push(await open(name, true));
  // As the lifecycle: every name is written by one registry (blobs are mounted, never carried across).
  const registries = new Set(outputs.map(registryOf));
  if (registries.size > 1)
    throw invalid(
      `rebaser: the image names are on different registries (${[...registries].join(', ')})`,
      'give tags of one registry; copy the result elsewhere afterwards',
    );
  const previous = await open(previousName, false);
  const runName = inputs.string('run-image');
  const openRef = async (name: string): Promise<RebaseImageRef> => {
    const o = await open(name, false);
    return { store: o.store, target: o.target, name };
  };
  const [main, ...extra] = outputs as [OpenedImage, ...OpenedImage[]];

  let result: Awaited<ReturnType<typeof rebase>>;
  try {
    result = await rebase({
      source: { store: previous.store, target: previous.target, name: previousName },
      destination: { store: main.store, ...(main.tag !== undefined ? { tag: main.tag } : {}) },
      extraDestinations: extra.map((o) => ({ store: o.store, tag: o.tag ?? 'latest' })),
      ...(runName ? { runImage: await openRef(runName) } : { openRunImage: openRef }),
      force: inputs.bool('force'),
      // The lifecycle rebaser takes any run image of the right target; naming one is the platform's choice.
      checkRunImageName: false,
      logger,
    });
  } catch (err) {
    // Registry and layout failures during a rebase are rebase errors (70–79) for the platform.
    throw asPhaseError(err, EXIT.REBASE_ERROR);
  }
  const names = [first, ...more];
  await writeReport(inputs.require('report'), {
    image: { tags: names, digest: result.digest, manifestSize: result.size },
  });
  logger.info(`*** Images (${result.digest.slice(7, 19)}):`);
  for (const n of names) logger.info(`      ${n}`);
  logger.info(`*** Digest: ${result.digest}`);
  return EXIT.OK;
}

export const rebaserCommand: PhaseCommand = {
  name: 'rebaser',
  summary: SUMMARY,
  usage: phaseUsage('rebaser', SUMMARY, rebaserInputs({ major: 0, minor: 15 }), [
    '',
    'Arguments: IMAGE [IMAGE…] — registry references (one registry), or oci:DIR[:TAG]; with -layout, references',
    'map to the layout dir <layout-dir>/<registry>/<repository>/<tag>. The first IMAGE receives the result, the others are more tags.',
    '-previous-image names the image to rebase (default: the first IMAGE); -run-image the new run image',
    '(default: runImage.image from io.buildpacks.lifecycle.metadata). report.toml goes to -report.',
    'Exit codes: 0 rebased; 72 refused or failed (registry and layout errors during the rebase included);',
    '11 unsupported Platform API; 3 bad flags or names on several registries (also -daemon); 1 other.',
  ]),
  run,
};
