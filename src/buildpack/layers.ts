import * as nodeFs from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import { parseToml, stringifyToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';
import { apiAtLeast } from '../util/api-version.js';
import { isDir } from '../util/fs.js';

/** `[types]` of `<layers>/<bp>/<layer>.toml`: where the layer goes. Missing types are all false. */
export interface LayerTypes {
  launch: boolean;
  build: boolean;
  cache: boolean;
}

export interface LayerMetadataFile {
  types: LayerTypes;
  /** The free-form `[metadata]` table (empty when absent). */
  metadata: Record<string, unknown>;
}

/** Exec.d executables of a launch layer: for every process, and per process type. Names only, sorted. */
export interface ExecD {
  all: string[];
  byProcess: Record<string, string[]>;
}

/** A layer as the builder found it after a buildpack ran. */
export interface BuildpackLayer {
  name: string;
  /** `<layers>/<bp>/<name>` (absolute when the layers dir is). */
  path: string;
  tomlPath: string;
  types: LayerTypes;
  metadata: Record<string, unknown>;
  /** Whether `<layers>/<bp>/<name>/` exists (a launch layer without dir reuses the previous image's layer). */
  hasDir: boolean;
  /** `[metadata] exec-env` (Buildpack API 0.12+); undefined = every execution environment. */
  execEnv: string[] | undefined;
  execD: ExecD;
}

/** Names a buildpack may not give a layer: they are its own output files. */
export const RESERVED_LAYER_NAMES: readonly string[] = ['build', 'launch', 'store'];

/** `/` in buildpack IDs becomes `_` in every on-disk path (layers dir, SBOM dirs, buildpacks dir). */
export function escapeId(id: string): string {
  return id.replaceAll('/', '_');
}

/** `<layers>/<escaped id>`: the directory a buildpack owns. */
export function buildpackLayersDir(layersDir: string, buildpackId: string): string {
  return join(layersDir, escapeId(buildpackId));
}

const typesSchema = z.object({
  launch: z.boolean().optional(),
  build: z.boolean().optional(),
  cache: z.boolean().optional(),
});
const layerTomlSchema = z.object({
  types: typesSchema.optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
});

/**
 * Parse a layer content metadata file. `launch`/`build`/`cache` outside `[types]` is the pre-0.6 layout and
 * an error: silently ignoring it would drop the layer.
 */
export function parseLayerToml(text: string, source: string): LayerMetadataFile {
  const raw = parseToml(text, source);
  for (const key of ['launch', 'build', 'cache']) {
    if (key in raw) {
      throw new PackfarmError(
        'INVALID_LAYER_METADATA',
        `${source}: \`${key}\` must be set under [types], not at the top level`,
        { hint: `write [types]\n${key} = ${String(raw[key])}` },
      );
    }
  }
  const parsed = parseWith(layerTomlSchema, raw, source, 'INVALID_LAYER_METADATA');
  return {
    types: {
      launch: parsed.types?.launch ?? false,
      build: parsed.types?.build ?? false,
      cache: parsed.types?.cache ?? false,
    },
    metadata: parsed.metadata ?? {},
  };
}

/**
 * Layer metadata as the restorer writes it back for the next build: `[metadata]` only, never `[types]`, so a
 * buildpack has to re-declare the types to keep the layer.
 */
export function encodeRestoredLayerToml(metadata: Record<string, unknown>): string {
  return stringifyToml({ metadata });
}

/** `[metadata] exec-env` of a layer; only Buildpack API 0.12+ gives it meaning. */
export function layerExecEnv(
  metadata: Record<string, unknown>,
  buildpackApi: string,
  source: string,
): string[] | undefined {
  if (!apiAtLeast(buildpackApi, '0.12') || !('exec-env' in metadata)) return undefined;
  const v = metadata['exec-env'];
  if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) {
    throw new PackfarmError(
      'INVALID_LAYER_METADATA',
      `${source}: metadata.exec-env: expected an array of strings, got ${JSON.stringify(v)}`,
    );
  }
  return v as string[];
}

export interface ReadLayersOptions {
  buildpackApi: string;
  fs?: LayersFs;
}

/** The subset of `node:fs/promises` the layer readers need (memfs' `promises` satisfies it). */
export interface LayersFs {
  readdir(path: string, opts: { withFileTypes: true }): Promise<LayersDirent[]>;
  readFile(path: string, encoding: 'utf8'): Promise<string | Uint8Array>;
  stat(path: string): Promise<{ isDirectory(): boolean; mode: number }>;
}
export interface LayersDirent {
  name: string | Uint8Array;
  isDirectory(): boolean;
  isFile(): boolean;
  isSymbolicLink(): boolean;
}
const hostFs = nodeFs as unknown as LayersFs;

/**
 * Read every `<layer>.toml` directly under a buildpack's layers dir (except launch/build/store.toml), sorted
 * by layer name. Directories without a `.toml` are not layers and are left alone (the buildpack may use
 * them as scratch space; they are neither exported nor cached).
 */
export async function readBuildpackLayers(
  bpLayersDir: string,
  opts: ReadLayersOptions,
): Promise<BuildpackLayer[]> {
  const fs = opts.fs ?? hostFs;
  const entries = await readdirOrEmpty(fs, bpLayersDir);
  const dirs = new Set(entries.filter((e) => e.isDirectory()).map((e) => String(e.name)));
  const names = entries
    .filter((e) => !e.isDirectory() && String(e.name).endsWith('.toml'))
    .map((e) => String(e.name).slice(0, -'.toml'.length))
    .filter((n) => n !== '' && !RESERVED_LAYER_NAMES.includes(n))
    .sort();
  const layers: BuildpackLayer[] = [];
  for (const name of names) {
    const tomlPath = join(bpLayersDir, `${name}.toml`);
    const text = String(await fs.readFile(tomlPath, 'utf8'));
    const file = parseLayerToml(text, tomlPath);
    const path = join(bpLayersDir, name);
    const hasDir = dirs.has(name) || (await isDir(path, fs));
    layers.push({
      name,
      path,
      tomlPath,
      types: file.types,
      metadata: file.metadata,
      hasDir,
      execEnv: layerExecEnv(file.metadata, opts.buildpackApi, tomlPath),
      execD: hasDir ? await readExecD(fs, path) : { all: [], byProcess: {} },
    });
  }
  return layers;
}

/** Directories a buildpack created with a reserved name (spec: MUST NOT). */
export async function findReservedLayerDirs(bpLayersDir: string, fs: LayersFs = hostFs): Promise<string[]> {
  const entries = await readdirOrEmpty(fs, bpLayersDir);
  return entries
    .filter((e) => e.isDirectory() && RESERVED_LAYER_NAMES.includes(String(e.name)))
    .map((e) => String(e.name))
    .sort();
}

/**
 * Rename the dirs of layers with all types false to `<layer>.ignore`, so later buildpacks cannot depend on
 * a buildpack's scratch layers (buildpack.md "Ignored Layers").
 */
export async function ignoreUntypedLayers(layers: readonly BuildpackLayer[]): Promise<string[]> {
  const renamed: string[] = [];
  for (const l of layers) {
    if (l.types.launch || l.types.build || l.types.cache || !l.hasDir) continue;
    const target = `${l.path}.ignore`;
    await nodeFs.rm(target, { recursive: true, force: true });
    await nodeFs.rename(l.path, target);
    renamed.push(l.name);
  }
  return renamed;
}

/** Exec.d executables of a layer; non-executable files are reported too (the launcher will fail on them). */
async function readExecD(fs: LayersFs, layerPath: string): Promise<ExecD> {
  const root = join(layerPath, 'exec.d');
  const out: ExecD = { all: [], byProcess: {} };
  for (const e of await readdirOrEmpty(fs, root)) {
    const name = String(e.name);
    if (e.isDirectory()) {
      const files = (await readdirOrEmpty(fs, join(root, name)))
        .filter((f) => !f.isDirectory())
        .map((f) => String(f.name))
        .sort();
      if (files.length > 0) out.byProcess[name] = files;
    } else {
      out.all.push(name);
    }
  }
  out.all.sort();
  return out;
}

/** Exec.d files of `layer` that lack an execute bit; empty when all can run. */
export async function nonExecutableExecD(layer: BuildpackLayer, fs: LayersFs = hostFs): Promise<string[]> {
  const paths = [
    ...layer.execD.all.map((n) => join(layer.path, 'exec.d', n)),
    ...Object.entries(layer.execD.byProcess).flatMap(([p, ns]) =>
      ns.map((n) => join(layer.path, 'exec.d', p, n)),
    ),
  ];
  const bad: string[] = [];
  for (const p of paths) {
    const st = await fs.stat(p);
    if ((st.mode & 0o111) === 0) bad.push(p);
  }
  return bad;
}

async function readdirOrEmpty(fs: LayersFs, dir: string): Promise<LayersDirent[]> {
  try {
    return await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    const code = (err as { code?: string } | null)?.code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return [];
    throw err;
  }
}
