import { EXIT } from '../../platform/exit-codes.js';
import { readAnalyzedFile, readGroupFile, readPlanFile } from '../../platform/files.js';
import { type InputDef, LIFECYCLE_INPUTS } from '../../platform/inputs.js';
import { type BuildEvent, build } from '../../phase/build.js';
import { formatApiVersion } from '../../util/api-version.js';
import type { CliIO } from '../output.js';
import { phaseUsage, preparePhase } from './common.js';
import type { PhaseCommand } from './types.js';

const I = LIFECYCLE_INPUTS;
/** The builder's inputs (platform.md "builder"); the same for every supported Platform API (0.12–0.15). */
const BUILDER_INPUTS: readonly InputDef[] = [
  I.analyzed,
  I.app,
  I['build-config'],
  I.buildpacks,
  I['exec-env'],
  I.group,
  I.layers,
  I['log-level'],
  I['no-color'],
  I.plan,
  I.platform,
];

const SUMMARY = 'Run bin/build of every buildpack in group.toml; write metadata.toml for the exporter.';

const USAGE = phaseUsage('builder', SUMMARY, BUILDER_INPUTS, [
  'Buildpack output is printed as it comes, each line prefixed with [<buildpack id>].',
  'Exit codes: 0 success, 11 unsupported Platform API, 12 unsupported Buildpack API, 51 a buildpack failed,',
  '52 other build errors (invalid launch.toml, layer metadata, SBOM …), 3 bad arguments, 1 unreadable inputs.',
]);

async function runBuilder(args: string[], io: CliIO, env: NodeJS.ProcessEnv): Promise<number> {
  const ctx = preparePhase({ name: 'builder', args, io, env, inputs: () => [...BUILDER_INPUTS] });
  if (typeof ctx === 'number') return ctx;
  const { inputs, logger } = ctx;
  const platformApi = formatApiVersion(ctx.platformApi);

  const groupPath = inputs.require('group');
  const planPath = inputs.require('plan');
  const analyzedPath = inputs.require('analyzed');
  const group = await readGroupFile(groupPath);
  const plan = await readPlanFile(planPath);
  const analyzed = await readAnalyzedFile(analyzedPath, { missingOk: true });
  if (!analyzed)
    logger.warn(`no analyzed metadata at ${analyzedPath}; target data comes from the build environment`);

  const onEvent = (e: BuildEvent) => {
    // Buildpack output passes through unchanged, as from the reference builder (and the creator).
    if (e.type === 'buildpack-output') {
      if (e.stream === 'stdout') io.out(e.line);
      else io.err(e.line);
    }
  };

  const result = await build({
    appDir: inputs.require('app'),
    layersDir: inputs.require('layers'),
    platformDir: inputs.require('platform'),
    buildpacksDir: inputs.require('buildpacks'),
    buildConfigDir: inputs.require('build-config'),
    execEnv: inputs.require('exec-env'),
    group,
    plan,
    analyzed,
    platformApi,
    hostEnv: env,
    logger,
    ...(io.signal ? { signal: io.signal } : {}),
    onEvent,
  });
  logger.debug(`wrote ${result.metadataPath}`);
  return EXIT.OK;
}

export const builderCommand: PhaseCommand = {
  name: 'builder',
  summary: SUMMARY,
  usage: USAGE,
  run: runBuilder,
};
