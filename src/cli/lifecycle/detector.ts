import { pathExists } from '../../util/fs.js';
import { type ApiVersion, apiAtLeast, formatApiVersion } from '../../util/api-version.js';
import { detect } from '../../phase/detect.js';
import { EXIT } from '../../platform/exit-codes.js';
import { type InputDef, LIFECYCLE_INPUTS, type ResolvedInputs } from '../../platform/inputs.js';
import { isPackfarmError } from '../../util/errors.js';
import type { CliIO } from '../output.js';
import { phaseUsage, preparePhase } from './common.js';
import type { PhaseCommand } from './types.js';

/** Where the reference lifecycle looks for order.toml when `<layers>/order.toml` is absent. */
export const CNB_ORDER_PATH = '/cnb/order.toml';

const SUMMARY = 'Find the group of buildpacks that applies to the app; write group.toml and plan.toml.';

/** The detector's inputs under a Platform API (platform.md "detector"; -system arrived with 0.15). */
export function detectorInputs(platformApi: ApiVersion): InputDef[] {
  const I = LIFECYCLE_INPUTS;
  const defs: InputDef[] = [
    I.analyzed,
    I.app,
    I['build-config'],
    I.buildpacks,
    I.extensions,
    I.generated,
    I.group,
    I.layers,
    I['log-level'],
    I['no-color'],
    I.order,
    I.plan,
    I.platform,
    I.run,
  ];
  if (apiAtLeast(platformApi, '0.15')) defs.push(I.system);
  defs.push(I['exec-env']);
  return defs;
}

/** `-order`, or when it was defaulted and `<layers>/order.toml` does not exist, the builder's /cnb/order.toml. */
export async function resolveOrderPath(inputs: ResolvedInputs): Promise<string> {
  const orderPath = inputs.require('order');
  if (inputs.from('order') === 'default' && !(await pathExists(orderPath))) return CNB_ORDER_PATH;
  return orderPath;
}

async function run(args: string[], io: CliIO, env: NodeJS.ProcessEnv): Promise<number> {
  const ctx = preparePhase({ name: 'detector', args, io, env, inputs: detectorInputs });
  if (typeof ctx === 'number') return ctx;
  const { inputs, logger, platformApi } = ctx;

  const orderPath = await resolveOrderPath(inputs);
  const systemPath = apiAtLeast(platformApi, '0.15') ? inputs.string('system') : undefined;

  try {
    await detect({
      platformApi: formatApiVersion(platformApi),
      appDir: inputs.require('app'),
      buildpacksDir: inputs.require('buildpacks'),
      platformDir: inputs.require('platform'),
      orderPath,
      groupPath: inputs.require('group'),
      planPath: inputs.require('plan'),
      analyzedPath: inputs.require('analyzed'),
      buildConfigDir: inputs.require('build-config'),
      ...(systemPath ? { systemPath } : {}),
      execEnv: inputs.require('exec-env'),
      hostEnv: env,
      logger,
      ...(io.signal ? { signal: io.signal } : {}),
    });
    return EXIT.OK;
  } catch (err) {
    if (
      isPackfarmError(err) &&
      (err.exitCode === EXIT.DETECT_FAILED || err.exitCode === EXIT.DETECT_FAILED_WITH_ERRORS)
    ) {
      logger.error('No buildpack groups passed detection.');
      if (err.exitCode === EXIT.DETECT_FAILED)
        logger.error('Please check that you are running against the correct path.');
    }
    throw err;
  }
}

export const detectorCommand: PhaseCommand = {
  name: 'detector',
  summary: SUMMARY,
  usage: phaseUsage('detector', SUMMARY, detectorInputs({ major: 0, minor: 15 }), [
    '',
    'Exit codes: 0 a group passed; 20 no group passed; 21 no group passed and a buildpack errored;',
    '22 other detect error; 11 unsupported Platform API; 12 unsupported Buildpack API; 3 bad flags; 1 other.',
    'Image extensions (-extensions, -generated, [[order-extensions]]) are not supported yet.',
  ]),
  run,
};
