import { type ApiVersion, isApiSupported, tryParseApiVersion } from '../util/api-version.js';
import { PackfarmError } from '../util/errors.js';
import { EXIT } from './exit-codes.js';

/** The Platform API versions packfarm's phases speak. */
export const SUPPORTED_PLATFORM_APIS: readonly string[] = ['0.12', '0.13', '0.14', '0.15'];
/** The newest Platform API we speak, used when a caller of the TypeScript API does not say. */
export const LATEST_PLATFORM_API = '0.15';

/**
 * Check the Platform API a phase was asked to speak (`CNB_PLATFORM_API`). Unset is an error too, as in the
 * reference lifecycle: guessing a version would silently change behaviour on upgrade. Exit 11.
 */
export function checkPlatformApi(api: string | undefined): ApiVersion {
  const supported = SUPPORTED_PLATFORM_APIS.join(', ');
  if (api === undefined || api.trim() === '')
    throw new PackfarmError('PLATFORM_API_UNSET', 'CNB_PLATFORM_API is not set', {
      exitCode: EXIT.INCOMPATIBLE_PLATFORM_API,
      hint: `set CNB_PLATFORM_API to one of: ${supported}`,
    });
  const v = tryParseApiVersion(api);
  if (!v || !isApiSupported(v, SUPPORTED_PLATFORM_APIS))
    throw new PackfarmError(
      'INCOMPATIBLE_PLATFORM_API',
      `CNB_PLATFORM_API "${api}" is not supported by packfarm (supported: ${supported})`,
      { exitCode: EXIT.INCOMPATIBLE_PLATFORM_API, hint: `set CNB_PLATFORM_API to one of: ${supported}` },
    );
  return v;
}
