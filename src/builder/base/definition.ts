import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { PackfarmError } from '../../util/errors.js';
import { parseToml } from '../../util/toml.js';
import { parseWith } from '../../util/validate.js';

/**
 * A base definition: which Debian release, which architectures, and which packages go into the build image
 * and the run image. Read from a base.toml (builders/<name>/base.toml) and/or command-line flags; flags win.
 *
 *   id = "io.packfarm.debian-12"
 *   distro = "debian:12"
 *   architectures = ["amd64", "arm64"]
 *   [build]
 *   packages = ["bash", "coreutils"]
 *   essential = true          # add every Essential: yes package (default true for build, false for run)
 *   [run]
 *   packages = ["dash", "libc6"]
 */

export interface DebianRelease {
  /** os-release VERSION_ID, what the io.buildpacks.base.distro.version label carries. */
  version: string;
  codename: string;
}

/** The releases packfarm knows how to fetch: suite names and the archive layout they use. */
export const DEBIAN_RELEASES: readonly DebianRelease[] = [
  { version: '11', codename: 'bullseye' },
  { version: '12', codename: 'bookworm' },
  { version: '13', codename: 'trixie' },
];

/** OCI architecture (and variant) ↔ Debian architecture, for the architectures Debian builds these releases for. */
export interface BaseArch {
  /** Debian's name (dpkg --print-architecture). */
  debian: string;
  /** OCI config `architecture`. */
  architecture: string;
  /** OCI config `variant`, when the normalization rules keep one (arm/v7); arm64 carries none. */
  variant?: string;
}

export const BASE_ARCHES: readonly BaseArch[] = [
  { debian: 'amd64', architecture: 'amd64' },
  { debian: 'arm64', architecture: 'arm64' },
  { debian: 'armhf', architecture: 'arm', variant: 'v7' },
  { debian: 'i386', architecture: '386' },
  { debian: 'ppc64el', architecture: 'ppc64le' },
  { debian: 's390x', architecture: 's390x' },
];

/** Accepts Debian names, OCI names and os/arch[/variant] forms: amd64, x86_64, arm64, aarch64, ppc64le … */
export function parseBaseArch(text: string, source: string): BaseArch {
  const t = text
    .trim()
    .toLowerCase()
    .replace(/^linux\//, '');
  const alias: Record<string, string> = {
    x86_64: 'amd64',
    aarch64: 'arm64',
    'arm64/v8': 'arm64',
    'arm/v7': 'armhf',
    arm: 'armhf',
    '386': 'i386',
    ppc64le: 'ppc64el',
  };
  const debian = alias[t] ?? t;
  const found = BASE_ARCHES.find((a) => a.debian === debian);
  if (!found)
    throw new PackfarmError(
      'UNKNOWN_ARCH',
      `${source}: "${text}" is not an architecture packfarm can build bases for`,
      {
        hint: `use one of ${BASE_ARCHES.map((a) => a.debian).join(', ')} (or the OCI names amd64, arm64, arm/v7, 386, ppc64le, s390x)`,
      },
    );
  return found;
}

export function parseDistro(text: string, source: string): DebianRelease {
  const m = /^debian:(.+)$/.exec(text.trim());
  const release = m ? DEBIAN_RELEASES.find((r) => r.version === m[1] || r.codename === m[1]) : undefined;
  if (!release)
    throw new PackfarmError(
      'UNKNOWN_DISTRO',
      `${source}: "${text}" is not a distribution packfarm can build bases from`,
      {
        hint: `use ${DEBIAN_RELEASES.map((r) => `debian:${r.version}`).join(', ')}`,
      },
    );
  return release;
}

const PACKAGE_RE = /^[a-z0-9][a-z0-9+.-]+$/;
const packageName = z.string().regex(PACKAGE_RE, 'must be a Debian package name (lower case, digits, + - .)');
const id = z.number().int().min(0).max(0x7fffffff);

const ImageSectionSchema = z.strictObject({
  packages: z.array(packageName).default([]),
  essential: z.boolean().optional(),
  tag: z.string().min(1).optional(),
  'user-id': id.optional(),
  'group-id': id.optional(),
  env: z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), z.string()).optional(),
});

export const BaseTomlSchema = z.strictObject({
  id: z
    .string()
    .regex(/^[A-Za-z0-9./-]+$/, 'must be letters, digits, ".", "/" and "-" (a reverse-DNS target ID)')
    .optional(),
  distro: z.string().optional(),
  architectures: z.array(z.string()).min(1, 'must name at least one architecture').optional(),
  mirror: z.url().optional(),
  'security-mirror': z.url().optional(),
  description: z.string().optional(),
  build: ImageSectionSchema.optional(),
  run: ImageSectionSchema.optional(),
});

export interface ImageDefinition {
  packages: string[];
  essential: boolean;
  userId: number;
  groupId: number;
  env: Record<string, string>;
  tag?: string;
}

export interface BaseDefinition {
  /** io.buildpacks.base.id (and the deprecated io.buildpacks.stack.id). */
  id: string;
  release: DebianRelease;
  arches: BaseArch[];
  mirror: string;
  securityMirror: string;
  description?: string;
  build: ImageDefinition;
  run: ImageDefinition;
}

export interface BaseFlags {
  distro?: string;
  arch?: string[];
  packages?: string[];
  runPackages?: string[];
  buildTag?: string;
  runTag?: string;
  id?: string;
  /** Overrides each section's `essential`. */
  essential?: { build: boolean; run: boolean };
}

export const DEFAULT_MIRROR = 'http://deb.debian.org/debian';
export const DEFAULT_SECURITY_MIRROR = 'http://deb.debian.org/debian-security';
/** Paketo's convention: one cnb group, a different user in the build and the run image (as the spec advises). */
const DEFAULTS = { buildUid: 1001, runUid: 1002, gid: 1000 };

/** Read a base.toml (when given) and lay the flags over it. Errors name the file or flag and the field. */
export async function loadBaseDefinition(
  file: string | undefined,
  flags: BaseFlags = {},
): Promise<BaseDefinition> {
  let raw: z.output<typeof BaseTomlSchema> = {};
  if (file !== undefined) {
    const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new PackfarmError(
        'FILE_UNREADABLE',
        `${file}: cannot read the base definition: ${err.code ?? err.message}`,
        {
          cause: err,
        },
      );
    });
    raw = parseWith(BaseTomlSchema, parseToml(text, file), file, 'INVALID_BASE_DEFINITION');
  }
  return resolveBaseDefinition(raw, flags, file ?? 'flags');
}

export function resolveBaseDefinition(
  raw: z.output<typeof BaseTomlSchema>,
  flags: BaseFlags,
  source: string,
): BaseDefinition {
  const distroText = flags.distro ?? raw.distro ?? 'debian:12';
  const release = parseDistro(distroText, flags.distro ? '--distro' : `${source}: distro`);
  const archTexts = flags.arch ?? raw.architectures ?? ['amd64'];
  const arches: BaseArch[] = [];
  for (const t of archTexts) {
    const a = parseBaseArch(t, flags.arch ? '--arch' : `${source}: architectures`);
    if (!arches.includes(a)) arches.push(a);
  }
  for (const [flag, list] of [
    ['--packages', flags.packages],
    ['--run-packages', flags.runPackages],
  ] as const) {
    for (const p of list ?? [])
      if (!PACKAGE_RE.test(p))
        throw new PackfarmError('INVALID_ARGS', `${flag}: "${p}" is not a Debian package name`, {
          hint: 'package names are lower case letters, digits and + - . (e.g. libc6, ca-certificates)',
        });
  }
  const image = (
    section: z.output<typeof ImageSectionSchema> | undefined,
    packages: string[] | undefined,
    tag: string | undefined,
    kind: 'build' | 'run',
  ): ImageDefinition => {
    const out: ImageDefinition = {
      packages: [...new Set(packages ?? section?.packages ?? [])].sort(),
      essential: flags.essential?.[kind] ?? section?.essential ?? kind === 'build',
      userId: section?.['user-id'] ?? (kind === 'build' ? DEFAULTS.buildUid : DEFAULTS.runUid),
      groupId: section?.['group-id'] ?? DEFAULTS.gid,
      env: section?.env ?? {},
    };
    const t = tag ?? section?.tag;
    if (t !== undefined) out.tag = t;
    return out;
  };
  const def: BaseDefinition = {
    id: flags.id ?? raw.id ?? `io.packfarm.debian-${release.version}`,
    release,
    arches,
    mirror: raw.mirror ?? DEFAULT_MIRROR,
    securityMirror: raw['security-mirror'] ?? DEFAULT_SECURITY_MIRROR,
    build: image(raw.build, flags.packages, flags.buildTag, 'build'),
    run: image(raw.run, flags.runPackages, flags.runTag, 'run'),
  };
  if (raw.description !== undefined) def.description = raw.description;
  for (const kind of ['build', 'run'] as const) {
    const d = def[kind];
    if (d.packages.length === 0 && !d.essential)
      throw new PackfarmError(
        'INVALID_BASE_DEFINITION',
        `${source}: ${kind}.packages: the ${kind} image has no packages`,
        {
          hint:
            kind === 'build'
              ? 'name packages with --packages or [build] packages'
              : 'name packages with --run-packages or [run] packages',
        },
      );
  }
  return def;
}
