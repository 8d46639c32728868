import { PackfarmError } from './errors.js';

/**
 * Buildpack and Platform API versions: `<major>.<minor>` or `<major>` (= `<major>.0`), unsigned integers,
 * compared as numbers (0.10 is newer than 0.9). Every version-gated behaviour asks `apiAtLeast`. A leaf
 * module: the buildpack contract (buildpack/api.ts) and the platform (platform/api.ts) both build on it.
 */
export interface ApiVersion {
  major: number;
  minor: number;
}

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
