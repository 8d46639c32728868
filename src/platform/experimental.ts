import { PackfarmError } from '../util/errors.js';
import type { Logger } from '../util/log.js';

/**
 * Experimental features, gated by `CNB_EXPERIMENTAL_MODE` the way the reference lifecycle gates them
 * (platform/experimental_features.go): `error` (the default) refuses the feature, `warn` allows it with a
 * warning, `quiet` allows it silently. `silent` is accepted as a synonym of `quiet`; any other value warns,
 * as the reference does.
 */
export const EXPERIMENTAL_ENV = 'CNB_EXPERIMENTAL_MODE';

/** The features the reference marks experimental, with the names its messages use. */
export const ExperimentalFeature = {
  /** `-layout` / CNB_USE_LAYOUT: images read from and written to OCI layout directories. */
  layout: 'export to OCI layout format',
  /** Image extensions (Dockerfiles). packfarm refuses them anyway; listed for the message. */
  dockerfiles: 'Dockerfiles',
} as const;

export type ExperimentalMode = 'error' | 'warn' | 'quiet';

export function experimentalMode(
  env: Readonly<Record<string, string | undefined>>,
): ExperimentalMode | 'other' {
  const v = env[EXPERIMENTAL_ENV];
  if (v === undefined || v === '') return 'error';
  if (v === 'error' || v === 'warn' || v === 'quiet') return v;
  if (v === 'silent') return 'quiet';
  return 'other';
}

/**
 * Allow or refuse an experimental feature the platform asked for. Refusal exits 1, as the reference's does
 * (a plain failure, not an argument error).
 */
export function guardExperimental(
  feature: string,
  env: Readonly<Record<string, string | undefined>>,
  logger: Logger,
): void {
  const mode = experimentalMode(env);
  if (mode === 'quiet') return;
  if (mode === 'error') {
    logger.error(`Platform requested experimental feature '${feature}'`);
    throw new PackfarmError(
      'EXPERIMENTAL_DISABLED',
      `experimental features are disabled by ${EXPERIMENTAL_ENV}=error`,
      {
        exitCode: 1,
        hint: `set ${EXPERIMENTAL_ENV}=warn (or quiet) to use '${feature}'`,
      },
    );
  }
  logger.warn(`Platform requested experimental feature '${feature}'`);
}
