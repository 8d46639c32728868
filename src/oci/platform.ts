import { PackfarmError } from '../util/errors.js';

/** A target platform: os/architecture[/variant], plus optional os.version. */
export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
  osVersion?: string;
}

const ARCH_ALIASES: Record<string, { architecture: string; variant?: string }> = {
  x86_64: { architecture: 'amd64' },
  'x86-64': { architecture: 'amd64' },
  amd64: { architecture: 'amd64' },
  aarch64: { architecture: 'arm64' },
  arm64: { architecture: 'arm64' },
  armhf: { architecture: 'arm', variant: 'v7' },
  armel: { architecture: 'arm', variant: 'v6' },
  i386: { architecture: '386' },
  i486: { architecture: '386' },
  i586: { architecture: '386' },
  i686: { architecture: '386' },
  ppc64el: { architecture: 'ppc64le' },
};

const PART_RE = /^[A-Za-z0-9_.-]+$/;

/**
 * Parse `os/arch[/variant]` (also a bare `arch`, taken as linux). The result is normalized.
 * Errors name the source (flag, file) and what was expected.
 */
export function parsePlatform(text: string, source = 'platform'): Platform {
  const parts = text.trim().split('/');
  const bad = () =>
    new PackfarmError(
      'INVALID_PLATFORM',
      `${source}: "${text}" is not a platform (expected os/arch[/variant], e.g. linux/arm64 or linux/arm/v7)`,
    );
  if (parts.length === 0 || parts.length > 3 || parts.some((p) => !PART_RE.test(p))) throw bad();
  if (parts.length === 1) return normalizePlatform({ os: 'linux', architecture: parts[0]! });
  const [os, architecture, variant] = parts as [string, string, string | undefined];
  return normalizePlatform({ os, architecture, ...(variant ? { variant } : {}) });
}

/** Normalize like containerd: lower-case, arch aliases, arm64/v8 → arm64, arm without variant → arm/v7. */
export function normalizePlatform(p: Platform): Platform {
  const os = p.os.toLowerCase();
  const rawArch = p.architecture.toLowerCase();
  const alias = ARCH_ALIASES[rawArch];
  const architecture = alias?.architecture ?? rawArch;
  let variant = p.variant?.toLowerCase() || alias?.variant;
  if (architecture === 'arm64' && (variant === 'v8' || variant === '8')) variant = undefined;
  if (architecture === 'amd64' && variant === 'v1') variant = undefined;
  if (architecture === 'arm') {
    if (!variant) variant = 'v7';
    else if (/^\d$/.test(variant)) variant = `v${variant}`;
  }
  const out: Platform = { os, architecture };
  if (variant) out.variant = variant;
  if (p.osVersion) out.osVersion = p.osVersion;
  return out;
}

/** `os/arch[/variant]`, normalized. */
export function formatPlatform(p: Platform): string {
  const n = normalizePlatform(p);
  return n.variant ? `${n.os}/${n.architecture}/${n.variant}` : `${n.os}/${n.architecture}`;
}

/** Exact match after normalization on both sides (os.version must agree when the wanted side sets it). */
export function platformsEqual(want: Platform, have: Platform): boolean {
  const a = normalizePlatform(want);
  const b = normalizePlatform(have);
  if (a.os !== b.os || a.architecture !== b.architecture || (a.variant ?? '') !== (b.variant ?? ''))
    return false;
  return !a.osVersion || !b.osVersion || a.osVersion === b.osVersion;
}

const ARM_VARIANTS = ['v8', 'v7', 'v6', 'v5'];

/**
 * Platforms a host of platform `host` can run, best first: itself, then what its CPU executes natively in a
 * compatibility mode (amd64 → 386; arm64 → arm/v8…v5; arm/v7 → v6, v5).
 */
export function compatiblePlatforms(host: Platform): Platform[] {
  const h = normalizePlatform(host);
  const out: Platform[] = [h];
  if (h.architecture === 'amd64') out.push({ os: h.os, architecture: '386' });
  if (h.architecture === 'arm64')
    for (const v of ARM_VARIANTS) out.push({ os: h.os, architecture: 'arm', variant: v });
  if (h.architecture === 'arm' && h.variant) {
    const i = ARM_VARIANTS.indexOf(h.variant);
    if (i >= 0)
      for (const v of ARM_VARIANTS.slice(i + 1)) out.push({ os: h.os, architecture: 'arm', variant: v });
  }
  return out;
}

/** Whether a host of platform `host` can run an image of platform `image` (strict or compatible). */
export function platformCompatible(host: Platform, image: Platform): boolean {
  return compatiblePlatforms(host).some((p) => platformsEqual(p, image));
}

/** A total order on platforms (by their normalized string), used to sort index children. */
export function comparePlatforms(a: Platform, b: Platform): number {
  const x = formatPlatform(a) + (a.osVersion ? `@${a.osVersion}` : '');
  const y = formatPlatform(b) + (b.osVersion ? `@${b.osVersion}` : '');
  return x < y ? -1 : x > y ? 1 : 0;
}

/** From an OCI descriptor / config platform object (`os.version` key) to our Platform. */
export function platformFromSpec(spec: {
  os: string;
  architecture: string;
  variant?: string | undefined;
  'os.version'?: string | undefined;
}): Platform {
  const p: Platform = { os: spec.os, architecture: spec.architecture };
  if (spec.variant) p.variant = spec.variant;
  if (spec['os.version']) p.osVersion = spec['os.version'];
  return normalizePlatform(p);
}

/** To the OCI JSON shape. */
export function platformToSpec(p: Platform): {
  os: string;
  architecture: string;
  variant?: string;
  'os.version'?: string;
} {
  const n = normalizePlatform(p);
  return {
    architecture: n.architecture,
    os: n.os,
    ...(n.variant ? { variant: n.variant } : {}),
    ...(n.osVersion ? { 'os.version': n.osVersion } : {}),
  };
}

/** The platform of the machine we run on, as the Node process sees it. */
export function hostPlatform(): Platform {
  return normalizePlatform({
    os: process.platform === 'win32' ? 'windows' : process.platform,
    architecture: process.arch === 'x64' ? 'amd64' : process.arch === 'ia32' ? '386' : process.arch,
  });
}
