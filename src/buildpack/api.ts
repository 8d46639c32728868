import { type ApiVersion, isApiSupported, tryParseApiVersion } from '../util/api-version.js';
import { PackfarmError } from '../util/errors.js';

/** The Buildpack API versions packfarm runs buildpacks for. */
export const SUPPORTED_BUILDPACK_APIS: readonly string[] = ['0.9', '0.10', '0.11', '0.12'];

/**
 * Check a buildpack's declared `api`; a missing, malformed or unsupported version is the lifecycle's
 * "incompatible buildpack API" error (the phases map its kind to exit 12). `who` names the buildpack (and
 * its file) in the message.
 */
export function checkBuildpackApi(api: string | undefined, who: string): ApiVersion {
  const v = api === undefined ? undefined : tryParseApiVersion(api);
  if (!v || !isApiSupported(v, SUPPORTED_BUILDPACK_APIS)) {
    const what = api === undefined ? 'declares no API version' : `declares Buildpack API "${api}"`;
    throw new PackfarmError(
      'INCOMPATIBLE_BUILDPACK_API',
      `${who} ${what}, which packfarm does not support (supported: ${SUPPORTED_BUILDPACK_APIS.join(', ')})`,
      {
        kind: 'incompatible-buildpack-api',
        hint: 'use a buildpack version built for a supported Buildpack API',
      },
    );
  }
  return v;
}
