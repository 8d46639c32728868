import { readFile } from 'node:fs/promises';
import type { BuildpackTarget, TargetDistro } from '../buildpack/descriptor.js';
import { hostPlatform, normalizePlatform } from '../oci/platform.js';

/**
 * Targets (buildpack.md "buildpack.toml > Targets", platform.md "Target Data"): what a buildpack says it can
 * build for, and what the base (run) image of a build is. Empty or missing fields are wildcards.
 */
export type { BuildpackTarget, TargetDistro } from '../buildpack/descriptor.js';

/** The target of the build: the run image's os/arch/variant and distro (analyzed.toml `[run-image.target]`). */
export interface RunImageTarget {
  id?: string;
  os?: string;
  arch?: string;
  variant?: string;
  distro?: { name: string; version: string };
}

// Compare architectures by their OCI name so `x86_64` in a hand-written buildpack.toml still matches amd64.
function normArch(arch: string): string {
  return normalizePlatform({ os: 'linux', architecture: arch }).architecture;
}

function fieldMatches(a: string | undefined, b: string | undefined, norm: (s: string) => string = (s) => s) {
  if (!a || !b) return true;
  return norm(a) === norm(b);
}

const lower = (s: string) => s.toLowerCase();

/**
 * Whether a buildpack target accepts the build's target: os, arch and variant each match or are empty on
 * either side; when the buildpack lists distros, the base must have distro data and one entry must match
 * (name and version, each empty = any).
 */
export function targetMatches(base: RunImageTarget, target: BuildpackTarget): boolean {
  if (!fieldMatches(base.os, target.os, lower)) return false;
  if (!fieldMatches(base.arch, target.arch, normArch)) return false;
  if (!fieldMatches(base.variant, target.variant, lower)) return false;
  const distros = target.distros ?? [];
  if (distros.length === 0) return true;
  const d = base.distro;
  if (!d) return false;
  return distros.some((want) => fieldMatches(d.name, want.name) && fieldMatches(d.version, want.version));
}

/** A buildpack with no targets at all accepts anything (its inferred target is added by the descriptor). */
export function anyTargetMatches(base: RunImageTarget, targets: readonly BuildpackTarget[]): boolean {
  return targets.length === 0 || targets.some((t) => targetMatches(base, t));
}

/** The `CNB_TARGET_*` variables describing `t` (optional ones only when known). */
export function targetEnv(t: RunImageTarget): Record<string, string> {
  const env: Record<string, string> = {
    CNB_TARGET_OS: t.os ?? '',
    CNB_TARGET_ARCH: t.arch ?? '',
  };
  if (t.variant) env.CNB_TARGET_ARCH_VARIANT = t.variant;
  if (t.distro?.name) env.CNB_TARGET_DISTRO_NAME = t.distro.name;
  if (t.distro?.version) env.CNB_TARGET_DISTRO_VERSION = t.distro.version;
  return env;
}

/** `ID` and `VERSION_ID` of an os-release file's text (quotes removed, as shells read them). */
export function parseOsRelease(text: string): TargetDistro {
  const out: TargetDistro = {};
  for (const raw of text.split('\n')) {
    const line = raw.trim();
    const eq = line.indexOf('=');
    if (eq < 0 || line.startsWith('#')) continue;
    const key = line.slice(0, eq);
    let value = line.slice(eq + 1);
    if (value.length >= 2 && (value[0] === '"' || value[0] === "'") && value.endsWith(value[0]!))
      value = value.slice(1, -1).replace(/\\(["'$`\\])/g, '$1');
    if (key === 'ID') out.name = value;
    else if (key === 'VERSION_ID') out.version = value;
  }
  return out;
}

/** Read the build environment's os-release; missing or unreadable → no distro data. */
export async function readOsRelease(path = '/etc/os-release'): Promise<TargetDistro | undefined> {
  try {
    return parseOsRelease(await readFile(path, 'utf8'));
  } catch {
    return undefined;
  }
}

export interface CompleteTargetOptions {
  /** os-release of the build environment, for distro data the run image did not carry. */
  osReleasePath?: string;
  /** Architecture to assume when the target has none (default: this machine's). */
  defaultArch?: string;
}

/**
 * Fill what the run image's target data lacked, as the reference lifecycle does before matching and before
 * exporting `CNB_TARGET_*`: os defaults to linux, arch to the build machine's, and the distro comes from the
 * build environment's `/etc/os-release` (build and run images must agree on it).
 */
export async function completeTarget(
  t: RunImageTarget | undefined,
  opts: CompleteTargetOptions = {},
): Promise<RunImageTarget> {
  const out: RunImageTarget = { ...(t ?? {}) };
  if (!out.os) out.os = 'linux';
  if (!out.arch) out.arch = opts.defaultArch ?? hostPlatform().architecture;
  if (!out.distro) {
    const d = await readOsRelease(opts.osReleasePath);
    if (d && (d.name || d.version)) out.distro = { name: d.name ?? '', version: d.version ?? '' };
  }
  return out;
}

/** Human form for messages: `linux/arm64/v8 (ubuntu 22.04)`. */
export function formatTarget(t: RunImageTarget | BuildpackTarget): string {
  const parts = [t.os || '*', t.arch || '*'];
  if (t.variant) parts.push(t.variant);
  let s = parts.join('/');
  if ('distro' in t && t.distro) s += ` (${t.distro.name || '*'} ${t.distro.version || '*'})`;
  if ('distros' in t && t.distros?.length)
    s += ` (${t.distros.map((d) => `${d.name || '*'} ${d.version || '*'}`).join(' | ')})`;
  return s;
}
