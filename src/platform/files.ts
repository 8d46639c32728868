import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { type PlanFile, PlanFileSchema } from '../buildpack/plan.js';
import { PackfarmError } from '../util/errors.js';
import { isNotFound, writeFileAtomic } from '../util/fs.js';
import { parseToml, stringifyToml, type TomlTable } from '../util/toml.js';
import { parseWith } from '../util/validate.js';
import type { RunImageTarget } from './target.js';

/**
 * The Platform API's data files (platform.md "Data Format"): order.toml, group.toml, plan.toml,
 * analyzed.toml, run.toml, system.toml. Each is parsed through a zod schema so errors name the file and the
 * field; writers go through temp + rename.
 */

const nonEmpty = (what: string) => z.string().min(1, `${what} must not be empty`);

// ---------------------------------------------------------------------------------------------------------
// order.toml

export const OrderElementSchema = z.object({
  id: nonEmpty('id'),
  version: nonEmpty('version'),
  optional: z.boolean().optional(),
  'exec-env': z.array(z.string()).optional(),
});
export type OrderElementToml = z.output<typeof OrderElementSchema>;

export const OrderGroupSchema = z.object({ group: z.array(OrderElementSchema).default([]) });

export const OrderFileSchema = z.object({
  order: z.array(OrderGroupSchema).default([]),
  'order-extensions': z.array(OrderGroupSchema).optional(),
});
export type OrderFile = z.output<typeof OrderFileSchema>;

// ---------------------------------------------------------------------------------------------------------
// group.toml

export const GroupEntrySchema = z.object({
  id: nonEmpty('id'),
  version: nonEmpty('version'),
  api: nonEmpty('api'),
  homepage: z.string().optional(),
  'exec-env': z.array(z.string()).optional(),
});
export type GroupEntry = z.output<typeof GroupEntrySchema>;

export const GroupFileSchema = z.object({
  group: z.array(GroupEntrySchema).default([]),
  'group-extensions': z.array(GroupEntrySchema).optional(),
});
export type GroupFile = z.output<typeof GroupFileSchema>;

// ---------------------------------------------------------------------------------------------------------
// plan.toml

// The plan's schema is part of the buildpack contract (buildpack/plan.ts): detection resolves it there.
export {
  type PlanEntry,
  PlanEntrySchema,
  type PlanFile,
  PlanFileSchema,
  type PlanProvider,
  PlanProviderSchema,
  type PlanRequire,
  PlanRequireSchema,
} from '../buildpack/plan.js';

// ---------------------------------------------------------------------------------------------------------
// analyzed.toml

/**
 * `[run-image.target]`. The spec writes `variant`, the reference lifecycle `arch-variant`: both are read,
 * `arch-variant` is written (what lifecycle-based platforms read back).
 */
export const TargetMetadataSchema = z.object({
  id: z.string().optional(),
  os: z.string().optional(),
  arch: z.string().optional(),
  variant: z.string().optional(),
  'arch-variant': z.string().optional(),
  distro: z.object({ name: z.string().default(''), version: z.string().default('') }).optional(),
});

export const AnalyzedFileSchema = z.looseObject({
  image: z.looseObject({ reference: z.string() }).optional(),
  'build-image': z.looseObject({ reference: z.string(), extend: z.boolean().optional() }).optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
  'run-image': z
    .looseObject({
      reference: z.string().default(''),
      image: z.string().optional(),
      extend: z.boolean().optional(),
      target: TargetMetadataSchema.optional(),
    })
    .optional(),
});
export type AnalyzedFile = z.output<typeof AnalyzedFileSchema>;

// ---------------------------------------------------------------------------------------------------------
// run.toml, system.toml

export const RunFileSchema = z.object({
  images: z
    .array(z.object({ image: nonEmpty('image'), mirrors: z.array(z.string()).optional() }))
    .default([]),
});
export type RunFile = z.output<typeof RunFileSchema>;

const SystemBuildpackSchema = z.object({
  id: nonEmpty('id'),
  version: nonEmpty('version'),
  optional: z.boolean().optional(),
});
export const SystemFileSchema = z.object({
  system: z
    .object({
      pre: z.object({ buildpacks: z.array(SystemBuildpackSchema).default([]) }).optional(),
      post: z.object({ buildpacks: z.array(SystemBuildpackSchema).default([]) }).optional(),
    })
    .default({}),
});
export type SystemFile = z.output<typeof SystemFileSchema>;

// ---------------------------------------------------------------------------------------------------------
// read / write

async function readTomlFile(path: string, what: string): Promise<TomlTable> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if (isNotFound(err))
      throw new PackfarmError('FILE_NOT_FOUND', `${path}: ${what} not found`, { cause: err });
    throw new PackfarmError('FILE_UNREADABLE', `${path}: cannot read ${what}: ${(err as Error).message}`, {
      cause: err,
    });
  }
  return parseToml(text, path);
}

async function readOptionalToml(path: string, what: string): Promise<TomlTable | undefined> {
  try {
    return await readTomlFile(path, what);
  } catch (err) {
    if (err instanceof PackfarmError && err.code === 'FILE_NOT_FOUND') return undefined;
    throw err;
  }
}

export function parseOrderToml(text: string, source: string): OrderFile {
  return parseWith(OrderFileSchema, parseToml(text, source), source, 'INVALID_ORDER');
}

export async function readOrderFile(path: string): Promise<OrderFile> {
  return parseWith(OrderFileSchema, await readTomlFile(path, 'order file'), path, 'INVALID_ORDER');
}

export async function readGroupFile(path: string): Promise<GroupFile> {
  return parseWith(GroupFileSchema, await readTomlFile(path, 'group file'), path, 'INVALID_GROUP');
}

export async function writeGroupFile(path: string, group: GroupFile): Promise<void> {
  const doc: TomlTable = { group: group.group.map(groupEntryToml) };
  if (group['group-extensions']?.length)
    doc['group-extensions'] = group['group-extensions'].map(groupEntryToml);
  await writeFileAtomic(path, stringifyToml(doc));
}

function groupEntryToml(e: GroupEntry): TomlTable {
  return {
    id: e.id,
    version: e.version,
    api: e.api,
    ...(e.homepage ? { homepage: e.homepage } : {}),
    ...(e['exec-env']?.length ? { 'exec-env': e['exec-env'] } : {}),
  };
}

export async function readPlanFile(path: string): Promise<PlanFile> {
  return parseWith(PlanFileSchema, await readTomlFile(path, 'plan file'), path, 'INVALID_PLAN');
}

export async function writePlanFile(path: string, plan: PlanFile): Promise<void> {
  const entries = plan.entries.map((e) => ({
    providers: e.providers.map((p) => ({
      id: p.id,
      version: p.version,
      ...(p.extension ? { extension: true } : {}),
    })),
    requires: e.requires.map((r) => ({ name: r.name, ...(r.metadata ? { metadata: r.metadata } : {}) })),
  }));
  // No entries: an empty file (0 bytes), as the reference lifecycle writes, not `entries = [ ]`.
  await writeFileAtomic(path, entries.length ? stringifyToml({ entries }) : '');
}

/**
 * Read analyzed.toml. A missing file is not an error for the detector (it then matches against the build
 * environment), so `missingOk` returns undefined instead.
 */
export async function readAnalyzedFile(
  path: string,
  opts: { missingOk?: boolean } = {},
): Promise<AnalyzedFile | undefined> {
  const doc = opts.missingOk
    ? await readOptionalToml(path, 'analyzed file')
    : await readTomlFile(path, 'analyzed file');
  if (doc === undefined) return undefined;
  return parseWith(AnalyzedFileSchema, doc, path, 'INVALID_ANALYZED');
}

export async function writeAnalyzedFile(path: string, analyzed: AnalyzedFile): Promise<void> {
  await writeFileAtomic(path, stringifyToml(analyzed as TomlTable));
}

/** The run image target recorded in analyzed.toml, with `variant`/`arch-variant` folded into `variant`. */
export function runImageTargetOf(analyzed: AnalyzedFile | undefined): RunImageTarget | undefined {
  const t = analyzed?.['run-image']?.target;
  if (!t) return undefined;
  const out: RunImageTarget = {};
  if (t.id) out.id = t.id;
  if (t.os) out.os = t.os;
  if (t.arch) out.arch = t.arch;
  const variant = t.variant || t['arch-variant'];
  if (variant) out.variant = variant;
  if (t.distro && (t.distro.name || t.distro.version))
    out.distro = { name: t.distro.name, version: t.distro.version };
  return out;
}

/** The `[run-image.target]` table to write for a target (lifecycle's key names). */
export function targetToAnalyzed(t: RunImageTarget): z.input<typeof TargetMetadataSchema> {
  return {
    ...(t.id ? { id: t.id } : {}),
    os: t.os ?? '',
    arch: t.arch ?? '',
    ...(t.variant ? { 'arch-variant': t.variant } : {}),
    ...(t.distro ? { distro: { name: t.distro.name, version: t.distro.version } } : {}),
  };
}

/** Read run.toml; missing → no run images (the analyzer then needs `-run-image`). */
export async function readRunFile(path: string): Promise<RunFile> {
  const doc = await readOptionalToml(path, 'run file');
  if (doc === undefined) return { images: [] };
  return parseWith(RunFileSchema, doc, path, 'INVALID_RUN');
}

/** Read system.toml (Platform API 0.15); missing → no system buildpacks. */
export async function readSystemFile(path: string): Promise<SystemFile> {
  const doc = await readOptionalToml(path, 'system file');
  if (doc === undefined) return { system: {} };
  return parseWith(SystemFileSchema, doc, path, 'INVALID_SYSTEM');
}
