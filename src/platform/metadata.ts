import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { apiAtLeast } from '../util/api-version.js';
import { writeFileAtomic } from '../util/fs.js';
import { parseToml, stringifyToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';

/**
 * `<layers>/config/metadata.toml`: what the builder hands the exporter (platform.md "metadata.toml"): the
 * buildpacks that ran, the merged processes, slices, labels and the buildpack-provided default process.
 */
export interface BuildMetadata {
  buildpacks: MetadataModule[];
  extensions: MetadataModule[];
  processes: MetadataProcess[];
  slices: { paths: string[] }[];
  labels: { key: string; value: string }[];
  buildpackDefaultProcessType: string | undefined;
  /** Legacy `[[bom]]` entries; only Platform API < 0.9 keeps them here (later ones go to sbom.legacy.json). */
  bom: unknown[];
}

export interface MetadataModule {
  id: string;
  version: string;
  api: string;
  homepage?: string | undefined;
  optional?: boolean | undefined;
}

export interface MetadataProcess {
  type: string;
  command: string[];
  args: string[];
  direct: boolean;
  workingDir: string | undefined;
  /** Undefined = every execution environment (written as `["*"]` for Platform API 0.15+). */
  execEnv: string[] | undefined;
  buildpackId: string;
}

/** Where the builder writes metadata.toml inside the layers dir. */
export function buildMetadataPath(layersDir: string): string {
  return join(layersDir, 'config', 'metadata.toml');
}

const moduleSchema = z.object({
  id: z.string().min(1),
  version: z.string(),
  api: z.string().min(1),
  homepage: z.string().optional(),
  optional: z.boolean().optional(),
});
const processSchema = z.object({
  type: z.string().min(1),
  // Platform API < 0.10 wrote a single string; later ones an array.
  command: z.union([z.string(), z.array(z.string()).min(1)]),
  args: z.array(z.string()).optional(),
  direct: z.boolean().optional(),
  'working-dir': z.string().optional(),
  'exec-env': z.array(z.string()).optional(),
  'buildpack-id': z.string().optional(),
});
const schema = z.object({
  'buildpack-default-process-type': z.string().optional(),
  buildpacks: z.array(moduleSchema).optional(),
  extensions: z.array(moduleSchema).optional(),
  processes: z.array(processSchema).optional(),
  slices: z.array(z.object({ paths: z.array(z.string()).optional() })).optional(),
  labels: z.array(z.object({ key: z.string(), value: z.string() })).optional(),
  bom: z.array(z.unknown()).optional(),
});

export function parseBuildMetadata(text: string, source: string): BuildMetadata {
  const md = parseWith(schema, parseToml(text, source), source, 'INVALID_BUILD_METADATA');
  return {
    buildpacks: md.buildpacks ?? [],
    extensions: md.extensions ?? [],
    processes: (md.processes ?? []).map((p) => ({
      type: p.type,
      command: typeof p.command === 'string' ? [p.command] : p.command,
      args: p.args ?? [],
      direct: p.direct ?? true,
      workingDir: p['working-dir'],
      execEnv: p['exec-env'],
      buildpackId: p['buildpack-id'] ?? '',
    })),
    slices: (md.slices ?? []).map((s) => ({ paths: s.paths ?? [] })),
    labels: md.labels ?? [],
    buildpackDefaultProcessType: md['buildpack-default-process-type'] || undefined,
    bom: md.bom ?? [],
  };
}

/** Serialise for the given Platform API (command shape and exec-env depend on it). */
export function encodeBuildMetadata(md: BuildMetadata, platformApi: string): string {
  const arrayCommand = apiAtLeast(platformApi, '0.10');
  const explicitExecEnv = apiAtLeast(platformApi, '0.15');
  const doc: Record<string, unknown> = {
    'buildpack-default-process-type': md.buildpackDefaultProcessType,
    buildpacks: md.buildpacks.map(encodeModule),
    extensions: md.extensions.length ? md.extensions.map(encodeModule) : undefined,
    processes:
      md.processes.length === 0
        ? undefined
        : md.processes.map((p) => {
            // Before Platform API 0.10 a command was one string; fixed arguments travel in args instead.
            const command = arrayCommand ? p.command : (p.command[0] ?? '');
            const args = arrayCommand ? p.args : [...p.command.slice(1), ...p.args];
            return {
              type: p.type,
              command,
              args,
              direct: p.direct,
              'buildpack-id': p.buildpackId,
              'working-dir': p.workingDir,
              'exec-env': p.execEnv ?? (explicitExecEnv ? ['*'] : undefined),
            };
          }),
    slices: md.slices.length ? md.slices.map((s) => ({ paths: s.paths })) : undefined,
    labels: md.labels.length ? md.labels.map((l) => ({ key: l.key, value: l.value })) : undefined,
    bom: !apiAtLeast(platformApi, '0.9') && md.bom.length ? md.bom : undefined,
  };
  return stringifyToml(doc);
}

function encodeModule(m: MetadataModule): Record<string, unknown> {
  return {
    id: m.id,
    version: m.version,
    api: m.api,
    homepage: m.homepage || undefined,
    optional: m.optional || undefined,
  };
}

export async function readBuildMetadata(path: string): Promise<BuildMetadata> {
  return parseBuildMetadata(await readFile(path, 'utf8'), path);
}

export async function writeBuildMetadata(
  path: string,
  md: BuildMetadata,
  platformApi: string,
): Promise<void> {
  await writeFileAtomic(path, encodeBuildMetadata(md, platformApi));
}
