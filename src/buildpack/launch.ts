import { isAbsolute, normalize, relative, sep } from 'node:path';
import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { parseToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';
import { apiAtLeast } from '../util/api-version.js';

/** A process as a buildpack declared it, normalised across Buildpack API versions. */
export interface ProcessDef {
  type: string;
  /** `command[0]` is the executable; the rest are always passed. */
  command: string[];
  /** Default arguments the user may replace (Buildpack API 0.9+). */
  args: string[];
  /** Pre-0.9 buildpacks choose; 0.9+ processes are always direct. */
  direct: boolean;
  default: boolean;
  workingDir: string | undefined;
  /** Execution environments the process is for; undefined = all. */
  execEnv: string[] | undefined;
}

export interface Label {
  key: string;
  value: string;
}

export interface Slice {
  paths: string[];
}

/** Deprecated `[[bom]]` entry (Buildpack API < 0.7 style), kept for the legacy BOM file. */
export interface BomEntry {
  name: string;
  metadata: Record<string, unknown>;
}

export interface LaunchToml {
  labels: Label[];
  processes: ProcessDef[];
  slices: Slice[];
  bom: BomEntry[];
}

/** Letters, digits, `.`, `_`, `-` (process types become file names under /cnb/process). */
export const PROCESS_TYPE_PATTERN = /^[A-Za-z0-9._-]+$/;

export interface ParseLaunchOptions {
  /** Names the file in errors, e.g. `/layers/my_bp/launch.toml`. */
  source: string;
  buildpackId: string;
  buildpackApi: string;
  logger?: Logger;
}

const stringArray = z.array(z.string());
export const bomEntrySchema = z.object({
  name: z.string().min(1),
  version: z.string().optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
});

/** Parse launch.toml as the given buildpack's API defines it. Errors name the file, the buildpack and the field. */
export function parseLaunchToml(text: string, opts: ParseLaunchOptions): LaunchToml {
  const log = opts.logger ?? silentLogger;
  const source = `${opts.source} (buildpack ${opts.buildpackId})`;
  const legacy = !apiAtLeast(opts.buildpackApi, '0.9');
  const processSchema = z.object({
    type: z.string().regex(PROCESS_TYPE_PATTERN, 'must contain only letters, digits, ".", "_" and "-"'),
    command: legacy
      ? z.string().min(1, 'must not be empty')
      : z.array(z.string()).min(1, 'must name an executable (non-empty array)'),
    args: stringArray.optional(),
    direct: z.boolean().optional(),
    default: z.boolean().optional(),
    'working-dir': z.string().optional(),
    'exec-env': stringArray.optional(),
  });
  const schema = z.object({
    labels: z.array(z.object({ key: z.string().min(1), value: z.string() })).optional(),
    processes: z.array(processSchema).optional(),
    slices: z.array(z.object({ paths: stringArray.optional() })).optional(),
    bom: z.array(bomEntrySchema).optional(),
  });
  const raw = parseToml(text, source);
  // Since 0.9 every process is direct; a `direct` key means the buildpack expects the old shell semantics.
  if (!legacy && Array.isArray(raw.processes)) {
    raw.processes.forEach((p, i) => {
      if (p && typeof p === 'object' && 'direct' in p) {
        throw new PackfarmError(
          'INVALID_LAUNCH_TOML',
          `${source}: processes[${i}].direct: not allowed for Buildpack API ${opts.buildpackApi} (processes are always direct since 0.9)`,
          {
            hint: 'remove `direct`; put the executable and its fixed arguments in `command`, defaults in `args`',
          },
        );
      }
    });
  }
  const parsed = parseWith(schema, raw, source, 'INVALID_LAUNCH_TOML');

  const labels = parsed.labels ?? [];
  const seenKeys = new Set<string>();
  labels.forEach((l, i) => {
    if (seenKeys.has(l.key)) fail(source, `labels[${i}].key`, `duplicate label key ${JSON.stringify(l.key)}`);
    seenKeys.add(l.key);
  });

  const processes: ProcessDef[] = [];
  const seenTypes = new Set<string>();
  let defaultType: string | undefined;
  (parsed.processes ?? []).forEach((p, i) => {
    if (seenTypes.has(p.type))
      fail(source, `processes[${i}].type`, `duplicate process type ${JSON.stringify(p.type)}`);
    seenTypes.add(p.type);
    if (p.default) {
      if (defaultType !== undefined) {
        fail(
          source,
          `processes[${i}].default`,
          `only one process may be the default (already ${JSON.stringify(defaultType)})`,
        );
      }
      defaultType = p.type;
    }
    let workingDir = p['working-dir'];
    if (workingDir !== undefined && !apiAtLeast(opts.buildpackApi, '0.8')) {
      log.warn(
        `${source}: processes[${i}].working-dir is ignored for Buildpack API ${opts.buildpackApi} (needs 0.8+)`,
      );
      workingDir = undefined;
    }
    let execEnv = p['exec-env'];
    if (execEnv !== undefined && !apiAtLeast(opts.buildpackApi, '0.12')) {
      log.warn(
        `${source}: processes[${i}].exec-env is ignored for Buildpack API ${opts.buildpackApi} (needs 0.12+)`,
      );
      execEnv = undefined;
    }
    processes.push({
      type: p.type,
      command: typeof p.command === 'string' ? [p.command] : [...p.command],
      args: p.args ?? [],
      direct: legacy ? (p.direct ?? false) : true,
      default: p.default ?? false,
      workingDir,
      execEnv,
    });
  });

  const slices = (parsed.slices ?? []).map((s, i) => {
    const paths = s.paths ?? [];
    paths.forEach((g, j) => {
      if (g === '') fail(source, `slices[${i}].paths[${j}]`, 'empty glob');
    });
    return { paths };
  });

  const bom = (parsed.bom ?? []).map((b, i) => {
    if (b.version !== undefined) {
      fail(source, `bom[${i}].version`, 'top-level version is not allowed; set metadata.version instead');
    }
    return { name: b.name, metadata: b.metadata ?? {} };
  });

  return { labels, processes, slices, bom };
}

/**
 * Check slice globs against the app dir: relative globs must not climb out of it, absolute ones must lie
 * inside it. Returns the first problem, or undefined.
 */
export function checkSlicePaths(slices: readonly Slice[], appDir: string): string | undefined {
  for (const [i, s] of slices.entries()) {
    for (const [j, g] of s.paths.entries()) {
      const rel = isAbsolute(g) ? relative(normalize(appDir), normalize(g)) : normalize(g);
      if (rel === '..' || rel.startsWith(`..${sep}`) || isAbsolute(rel)) {
        return `slices[${i}].paths[${j}]: ${JSON.stringify(g)} is outside the app directory ${appDir}`;
      }
    }
  }
  return undefined;
}

function fail(source: string, field: string, what: string): never {
  throw new PackfarmError('INVALID_LAUNCH_TOML', `${source}: ${field}: ${what}`);
}
