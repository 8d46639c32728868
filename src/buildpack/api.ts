import { PackfarmError } from '../util/errors.js';
import { EXIT } from '../platform/exit-codes.js';

/**
 * Buildpack and Platform API versions: `<major>.<minor>` or `<major>` (= `<major>.0`), unsigned integers,
 * compared as numbers (0.10 is newer than 0.9). Every version-gated behaviour asks `apiAtLeast`.
 */
export interface ApiVersion {
  major: number;
  minor: number;
}

export const SUPPORTED_BUILDPACK_APIS: readonly string[] = ['0.9', '0.10', '0.11', '0.12'];
export const SUPPORTED_PLATFORM_APIS: readonly string[] = ['0.12', '0.13', '0.14', '0.15'];
/** The newest Platform API we speak, used when a caller of the TypeScript API does not say. */
export const LATEST_PLATFORM_API = '0.15';

// A leading `v` is tolerated as the reference lifecycle does.
const VERSION_RE = /^v?(\d+)(?:\.(\d+))?$/;

/** Parse a version, or undefined when the text is not one. */
export function tryParseApiVersion(text: string): ApiVersion | undefined {
  const m = VERSION_RE.exec(text.trim());
  if (!m) return undefined;
  const major = Number(m[1]);
  const minor = m[2] === undefined ? 0 : Number(m[2]);
  if (!Number.isSafeInteger(major) || !Number.isSafeInteger(minor)) return undefined;
  return { major, minor };
}

/** Parse a version; errors name where it came from. */
export function parseApiVersion(text: string, source = 'API version'): ApiVersion {
  const v = tryParseApiVersion(text);
  if (!v)
    throw new PackfarmError(
      'INVALID_API_VERSION',
      `${source}: "${text}" is not an API version (expected <major>.<minor>, e.g. 0.12)`,
    );
  return v;
}

function asVersion(v: ApiVersion | string): ApiVersion {
  return typeof v === 'string' ? parseApiVersion(v) : v;
}

export function formatApiVersion(v: ApiVersion): string {
  return `${v.major}.${v.minor}`;
}

/** -1, 0 or 1 as `a` is older than, equal to or newer than `b`. */
export function compareApiVersions(a: ApiVersion | string, b: ApiVersion | string): number {
  const x = asVersion(a);
  const y = asVersion(b);
  if (x.major !== y.major) return x.major < y.major ? -1 : 1;
  if (x.minor !== y.minor) return x.minor < y.minor ? -1 : 1;
  return 0;
}

export function apiAtLeast(v: ApiVersion | string, min: ApiVersion | string): boolean {
  return compareApiVersions(v, min) >= 0;
}

/**
 * Whether `v` is covered by a list of supported versions. Before 1.0 every minor is its own contract, so the
 * version must be listed exactly; from 1.0 on minors are additive, so a listed 1.3 also covers 1.0–1.2.
 */
export function isApiSupported(v: ApiVersion | string, supported: readonly string[]): boolean {
  const x = asVersion(v);
  return supported.some((s) => {
    const y = parseApiVersion(s);
    if (y.major === 0) return x.major === 0 && x.minor === y.minor;
    return x.major === y.major && x.minor <= y.minor;
  });
}

/**
 * Check a buildpack's declared `api`; a missing, malformed or unsupported version is the lifecycle's
 * "incompatible buildpack API" error (exit 12). `who` names the buildpack (and its file) in the message.
 */
export function checkBuildpackApi(api: string | undefined, who: string): ApiVersion {
  const v = api === undefined ? undefined : tryParseApiVersion(api);
  if (!v || !isApiSupported(v, SUPPORTED_BUILDPACK_APIS)) {
    const what = api === undefined ? 'declares no API version' : `declares Buildpack API "${api}"`;
    throw new PackfarmError(
      'INCOMPATIBLE_BUILDPACK_API',
      `${who} ${what}, which packfarm does not support (supported: ${SUPPORTED_BUILDPACK_APIS.join(', ')})`,
      {
        exitCode: EXIT.INCOMPATIBLE_BUILDPACK_API,
        hint: 'use a buildpack version built for a supported Buildpack API',
      },
    );
  }
  return v;
}

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
