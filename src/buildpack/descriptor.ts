import { readFile, readdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import { parseToml, type TomlTable } from '../util/toml.js';
import { parseWith } from '../util/validate.js';
import { apiAtLeast, tryParseApiVersion } from '../util/api-version.js';

/**
 * buildpack.toml (buildpack.md "Data Format > buildpack.toml") and the on-disk buildpacks directory
 * (`<buildpacks>/<id with / → _>/<version>/`, platform.md "Buildpacks Directory Layout").
 */

/**
 * Targets (buildpack.md "buildpack.toml > Targets"): what a buildpack says it can build for. Empty or missing
 * fields are wildcards; platform/target.ts matches them against the run image.
 */
export interface TargetDistro {
  name?: string;
  version?: string;
}

/** One `[[targets]]` entry of buildpack.toml. */
export interface BuildpackTarget {
  os?: string;
  arch?: string;
  variant?: string;
  distros?: TargetDistro[];
}

/** One entry of an order group: in order.toml, in a composite's `[[order]]`, or after expansion. */
export interface OrderElement {
  id: string;
  version: string;
  optional: boolean;
  /** Execution environments this entry is restricted to (order-group `exec-env`, Buildpack API 0.12). */
  execEnv?: string[];
}

export interface OrderGroup {
  group: OrderElement[];
}

export type Order = OrderGroup[];

export interface BuildpackLicense {
  type?: string;
  uri?: string;
}

export interface BuildpackDescriptor {
  /** The Buildpack API the buildpack declares (`api`), unvalidated; see `checkBuildpackApi`. */
  api: string;
  id: string;
  version: string;
  name?: string;
  homepage?: string;
  description?: string;
  keywords: string[];
  licenses: BuildpackLicense[];
  /** `clear-env`: user env from `<platform>/env/` is not set for this buildpack's detect/build. */
  clearEnv: boolean;
  sbomFormats: string[];
  /**
   * Execution environments the buildpack supports (`exec-env`, either shape); empty = all. Only meaningful for
   * Buildpack API >= 0.12 — `supportsExecEnv` applies that rule.
   */
  execEnv: string[];
  /** A composite buildpack's order; empty for a component buildpack. */
  order: Order;
  /** The targets to match: declared, translated from deprecated `[[stacks]]`, or inferred from `bin/`. */
  targets: BuildpackTarget[];
  targetsFrom: 'targets' | 'stacks' | 'inferred' | 'none';
  /** Deprecated `[[stacks]]`, kept for reporting. */
  stacks: { id: string; mixins: string[] }[];
  metadata?: Record<string, unknown>;
  /** Absolute buildpack root directory (`CNB_BUILDPACK_DIR`). */
  dir: string;
  /** Absolute path of buildpack.toml, for messages. */
  path: string;
  /** What is accepted but outside the spec (an id with "_"), for the phase to log. */
  warnings?: string[];
}

export const RESERVED_BUILDPACK_IDS: readonly string[] = ['app', 'config', 'generated', 'sbom'];

// The spec allows letters, digits, ".", "/" and "-"; the reference lifecycle also accepts "_" (its own
// fixtures are full of such ids), so packfarm does too, with a warning (spec/lifecycle.md, deviations).
const ID_RE = /^[A-Za-z0-9._/-]+$/;

const idSchema = z
  .string()
  .min(1, 'must not be empty')
  .regex(ID_RE, 'may only contain letters, digits, ".", "/", "-" (and "_")')
  .refine((id) => !RESERVED_BUILDPACK_IDS.includes(id.toLowerCase()), {
    message: `is reserved (${RESERVED_BUILDPACK_IDS.join(', ')})`,
  });

// `exec-env = ["production"]` (lifecycle, pack) or `[[buildpack.exec-env]] name = "production"` (spec example).
const execEnvSchema = z.array(z.union([z.string(), z.object({ name: z.string() })]));

const targetSchema = z.object({
  os: z.string().optional(),
  arch: z.string().optional(),
  variant: z.string().optional(),
  'arch-variant': z.string().optional(),
  distros: z.array(z.object({ name: z.string().optional(), version: z.string().optional() })).optional(),
});

const orderSchema = z.array(
  z.object({
    group: z
      .array(
        z.object({
          id: z.string().min(1, 'must not be empty'),
          version: z.string().min(1, 'must not be empty'),
          optional: z.boolean().optional(),
          'exec-env': z.array(z.string()).optional(),
        }),
      )
      .default([]),
  }),
);

export const BuildpackTomlSchema = z.object({
  api: z
    .string({ error: 'is required (the Buildpack API version, e.g. "0.12")' })
    .min(1, 'must not be empty'),
  buildpack: z.object(
    {
      id: idSchema,
      version: z.string().min(1, 'must not be empty'),
      name: z.string().optional(),
      homepage: z.string().optional(),
      description: z.string().optional(),
      keywords: z.array(z.string()).optional(),
      licenses: z.array(z.object({ type: z.string().optional(), uri: z.string().optional() })).optional(),
      'clear-env': z.boolean().optional(),
      'sbom-formats': z.array(z.string()).optional(),
      'exec-env': execEnvSchema.optional(),
    },
    { error: 'is required (a [buildpack] table with id and version)' },
  ),
  order: orderSchema.optional(),
  targets: z.array(targetSchema).optional(),
  stacks: z.array(z.object({ id: z.string(), mixins: z.array(z.string()).optional() })).optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
});

export function orderFromToml(groups: z.output<typeof orderSchema>): Order {
  return groups.map((g) => ({
    group: g.group.map((e) => ({
      id: e.id,
      version: e.version,
      optional: e.optional ?? false,
      ...(e['exec-env'] ? { execEnv: e['exec-env'] } : {}),
    })),
  }));
}

export interface ParseDescriptorOptions {
  /** Shown in errors; normally the buildpack.toml path. */
  source: string;
  /** The buildpack root directory. */
  dir: string;
  /** Names of the files in `<dir>/bin`, for target inference. */
  binFiles?: readonly string[];
}

const BIONIC = 'io.buildpacks.stacks.bionic';

/** Parse buildpack.toml content (text or an already parsed table). */
export function parseBuildpackDescriptor(
  input: string | TomlTable,
  opts: ParseDescriptorOptions,
): BuildpackDescriptor {
  const doc = typeof input === 'string' ? parseToml(input, opts.source) : input;
  const raw = parseWith(BuildpackTomlSchema, doc, opts.source, 'INVALID_BUILDPACK_DESCRIPTOR');
  const bp = raw.buildpack;

  const declared: BuildpackTarget[] = (raw.targets ?? []).map((t, i) => {
    if (t.variant && t['arch-variant'] && t.variant !== t['arch-variant'])
      throw new PackfarmError(
        'INVALID_BUILDPACK_DESCRIPTOR',
        `${opts.source}: invalid content: targets[${i}]: "variant" (${t.variant}) and "arch-variant" (${t['arch-variant']}) disagree`,
      );
    const out: BuildpackTarget = {};
    if (t.os) out.os = t.os;
    if (t.arch) out.arch = t.arch;
    const variant = t.variant || t['arch-variant'];
    if (variant) out.variant = variant;
    if (t.distros?.length)
      out.distros = t.distros.map((d) => ({
        ...(d.name ? { name: d.name } : {}),
        ...(d.version ? { version: d.version } : {}),
      }));
    return out;
  });

  const stacks = (raw.stacks ?? []).map((s) => ({ id: s.id, mixins: s.mixins ?? [] }));
  let targets = declared;
  let targetsFrom: BuildpackDescriptor['targetsFrom'] = declared.length ? 'targets' : 'none';
  if (targets.length === 0 && stacks.length > 0) {
    // Deprecated stacks (buildpack.md "Deprecations"): bionic means linux/amd64 Ubuntu 18.04, "*" any target.
    // Like the reference lifecycle, bionic is translated for an old API only when it is the sole stack.
    const api = tryParseApiVersion(raw.api);
    const newApi = api !== undefined && apiAtLeast(api, '0.10');
    targets = [];
    for (const s of stacks) {
      if (s.id === BIONIC && (newApi || stacks.length === 1))
        targets.push({ os: 'linux', arch: 'amd64', distros: [{ name: 'ubuntu', version: '18.04' }] });
      else if (s.id === '*') targets.push({});
    }
    if (targets.length) targetsFrom = 'stacks';
  }
  if (targets.length === 0) {
    // buildpack.md "Targets": without targets a `bin/build` means linux, `bin/build.bat|exe` windows.
    const bin = new Set(opts.binFiles ?? []);
    if (bin.has('build')) targets.push({ os: 'linux' });
    if (bin.has('build.bat') || bin.has('build.exe')) targets.push({ os: 'windows' });
    if (targets.length) targetsFrom = 'inferred';
  }

  const execEnv = (bp['exec-env'] ?? []).map((e) => (typeof e === 'string' ? e : e.name));
  const d: BuildpackDescriptor = {
    api: raw.api,
    id: bp.id,
    version: bp.version,
    keywords: bp.keywords ?? [],
    licenses: bp.licenses ?? [],
    clearEnv: bp['clear-env'] ?? false,
    sbomFormats: bp['sbom-formats'] ?? [],
    execEnv,
    order: orderFromToml(raw.order ?? []),
    targets,
    targetsFrom,
    stacks,
    dir: opts.dir,
    path: opts.source,
  };
  if (bp.name !== undefined) d.name = bp.name;
  if (bp.homepage) d.homepage = bp.homepage;
  if (bp.description !== undefined) d.description = bp.description;
  if (raw.metadata) d.metadata = raw.metadata;
  if (bp.id.includes('_'))
    d.warnings = [
      `buildpack ${bp.id}@${bp.version} (${opts.source}): the id contains "_", which the spec does not allow ` +
        '(letters, digits, ".", "/" and "-"); accepted as the reference lifecycle does',
    ];
  return d;
}

export function isComposite(d: BuildpackDescriptor): boolean {
  return d.order.length > 0;
}

/**
 * Whether the buildpack runs in execution environment `execEnv`: no list (or an API before 0.12, which had
 * no such key) means every environment, `*` too.
 */
export function supportsExecEnv(d: BuildpackDescriptor, execEnv: string): boolean {
  const api = tryParseApiVersion(d.api);
  if (!api || !apiAtLeast(api, '0.12')) return true;
  if (d.execEnv.length === 0) return true;
  return d.execEnv.includes('*') || d.execEnv.includes(execEnv);
}

/** `/` in a buildpack ID becomes `_` in every on-disk path (buildpacks dir, layers dir). */
export function escapeBuildpackId(id: string): string {
  return id.replaceAll('/', '_');
}

/** `<buildpacks>/<escaped id>/<version>` */
export function buildpackDirFor(buildpacksDir: string, id: string, version: string): string {
  return join(buildpacksDir, escapeBuildpackId(id), version);
}

/** Read `<dir>/buildpack.toml` (and list `<dir>/bin` for target inference). */
export async function readBuildpackDescriptor(dir: string): Promise<BuildpackDescriptor> {
  const root = resolve(dir);
  const path = join(root, 'buildpack.toml');
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code === 'ENOENT' || code === 'ENOTDIR')
      throw new PackfarmError('BUILDPACK_NOT_FOUND', `${path}: no buildpack.toml`, { cause: err });
    throw new PackfarmError('BUILDPACK_UNREADABLE', `${path}: cannot read: ${(err as Error).message}`, {
      cause: err,
    });
  }
  let binFiles: string[] = [];
  try {
    binFiles = await readdir(join(root, 'bin'));
  } catch {
    // No bin/ (a composite buildpack): nothing to infer a target from.
  }
  return parseBuildpackDescriptor(text, { source: path, dir: root, binFiles });
}

/**
 * Buildpacks laid out as `<buildpacks>/<escaped id>/<version>/`. Lookups are cached (one read of each
 * buildpack.toml per run, however many groups mention it).
 */
export interface BuildpackStore {
  readonly buildpacksDir: string;
  lookup(id: string, version: string): Promise<BuildpackDescriptor>;
}

export function createBuildpackStore(buildpacksDir: string): BuildpackStore {
  const root = resolve(buildpacksDir);
  const cache = new Map<string, Promise<BuildpackDescriptor>>();
  return {
    buildpacksDir: root,
    lookup(id, version) {
      const key = `${id}@${version}`;
      let p = cache.get(key);
      if (!p) {
        p = lookupBuildpack(root, id, version);
        cache.set(key, p);
      }
      return p;
    },
  };
}

/** Read the buildpack `id@version` from a buildpacks directory; errors say which buildpack and where. */
export async function lookupBuildpack(
  buildpacksDir: string,
  id: string,
  version: string,
): Promise<BuildpackDescriptor> {
  const dir = buildpackDirFor(buildpacksDir, id, version);
  try {
    return await readBuildpackDescriptor(dir);
  } catch (err) {
    if (err instanceof PackfarmError && err.code === 'BUILDPACK_NOT_FOUND')
      throw new PackfarmError(
        'BUILDPACK_NOT_FOUND',
        `buildpack ${id}@${version} not found: ${join(dir, 'buildpack.toml')} does not exist`,
        {
          cause: err,
          hint: `buildpacks are looked up as <buildpacks>/<id with / as _>/<version>/buildpack.toml`,
        },
      );
    throw err;
  }
}
