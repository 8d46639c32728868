import * as nodeFs from 'node:fs/promises';
import { join } from 'node:path';
import { BUILD_ENV_ALLOWLIST, POSIX_PATH_VARS } from '../exec/env.js';
import { isDir, isNotFound } from '../util/fs.js';

/**
 * The environment model of the Buildpack API ("Environment" in buildpack.md): what buildpacks see at build
 * time and what processes see at launch, built from env-file directories and layer root dirs.
 *
 * Everything here is a pure function over an `EnvVars` map except the few readers at the bottom, which take
 * a small fs interface so units can run against memfs.
 */
export type EnvVars = Map<string, string>;

/** What an env file does to its variable. `delim` files only provide a delimiter for the same layer. */
export type EnvAction = 'override' | 'default' | 'append' | 'prepend';

/** One file of an env directory: its full file name (with suffix) and its exact content. */
export interface EnvFile {
  fileName: string;
  value: string;
}

/** Layer subdirectories that feed path-list variables while buildpacks build. */
export const BUILD_ROOT_DIRS: Readonly<Record<string, readonly string[]>> = {
  bin: ['PATH'],
  lib: ['LD_LIBRARY_PATH', 'LIBRARY_PATH'],
  include: ['CPATH'],
  pkgconfig: ['PKG_CONFIG_PATH'],
};

/** At launch only binaries and shared libraries are put on paths. */
export const LAUNCH_ROOT_DIRS: Readonly<Record<string, readonly string[]>> = {
  bin: ['PATH'],
  lib: ['LD_LIBRARY_PATH'],
};

const PATH_LIST_SEPARATOR = ':';
const SUFFIXES = new Set(['override', 'default', 'append', 'prepend', 'delim']);

/** The starting build environment: the allowlisted and POSIX path variables of `host`, nothing else. */
export function newBuildEnv(host: Readonly<Record<string, string | undefined>>): EnvVars {
  const keep = new Set([...BUILD_ENV_ALLOWLIST, ...POSIX_PATH_VARS]);
  const vars: EnvVars = new Map();
  for (const [k, v] of Object.entries(host)) if (v !== undefined && keep.has(k)) vars.set(k, v);
  return vars;
}

/**
 * Split an env file name into variable name and suffix. The name runs to the first `.`. Returns undefined
 * for files that are not env files (unknown suffix, empty name), which are ignored.
 */
export function parseEnvFileName(
  fileName: string,
): { name: string; suffix: EnvAction | 'delim' | undefined } | undefined {
  const dot = fileName.indexOf('.');
  const name = dot < 0 ? fileName : fileName.slice(0, dot);
  if (name === '' || name.includes('=')) return undefined;
  if (dot < 0) return { name, suffix: undefined };
  const suffix = fileName.slice(dot + 1);
  if (!SUFFIXES.has(suffix)) return undefined;
  return { name, suffix: suffix as EnvAction | 'delim' };
}

export interface ApplyEnvOptions {
  /** Action of files without a suffix: `override` for buildpack layers, `default` for operator build-config. */
  defaultAction: EnvAction;
}

/**
 * Apply the env directories of ONE layer (e.g. `env/` then `env.build/`) to `vars`, in the given order.
 * Within a directory files apply in name order. A `NAME.delim` file sets the delimiter for NAME's
 * append/prepend within this layer: the one in the same directory wins, else one from another directory
 * of the layer. Without a delimiter, values are concatenated as they are.
 */
export function applyLayerEnvDirs(vars: EnvVars, dirs: readonly EnvFile[][], opts: ApplyEnvOptions): void {
  const layerDelims = new Map<string, string>();
  for (const dir of dirs) {
    for (const f of dir) {
      const parsed = parseEnvFileName(f.fileName);
      if (parsed?.suffix === 'delim' && !layerDelims.has(parsed.name)) layerDelims.set(parsed.name, f.value);
    }
  }
  for (const dir of dirs) {
    const dirDelims = new Map<string, string>();
    for (const f of dir) {
      const parsed = parseEnvFileName(f.fileName);
      if (parsed?.suffix === 'delim') dirDelims.set(parsed.name, f.value);
    }
    for (const f of sortByName(dir)) {
      const parsed = parseEnvFileName(f.fileName);
      if (!parsed || parsed.suffix === 'delim') continue;
      const action = parsed.suffix ?? opts.defaultAction;
      const delim = dirDelims.get(parsed.name) ?? layerDelims.get(parsed.name) ?? '';
      applyAction(vars, parsed.name, action, f.value, delim);
    }
  }
}

/** Apply a single modification. Exposed for the platform's operator env and for tests. */
export function applyAction(
  vars: EnvVars,
  name: string,
  action: EnvAction,
  value: string,
  delim: string,
): void {
  const current = vars.get(name) ?? '';
  switch (action) {
    case 'override':
      vars.set(name, value);
      return;
    case 'default':
      if (current === '') vars.set(name, value);
      return;
    case 'append':
      vars.set(name, current === '' ? value : current + delim + value);
      return;
    case 'prepend':
      vars.set(name, current === '' ? value : value + delim + current);
      return;
  }
}

/**
 * Put one buildpack's layers on the path-list variables: for each root dir (bin, lib, …) the existing
 * `<layer>/<dir>` paths in ascending layer-name order are prepended as one block, so later buildpacks come
 * first and, within a buildpack, layers stay alphabetical (buildpack.md "Layer Paths").
 *
 * `layers` must already be sorted by name; `has(layerPath, dir)` says whether the subdirectory exists.
 */
export function prependLayerRootDirs(
  vars: EnvVars,
  layers: readonly string[],
  has: (layerPath: string, dir: string) => boolean,
  rootDirs: Readonly<Record<string, readonly string[]>>,
): void {
  for (const [dir, names] of Object.entries(rootDirs)) {
    const paths = layers.filter((l) => has(l, dir)).map((l) => join(l, dir));
    if (paths.length === 0) continue;
    const block = paths.join(PATH_LIST_SEPARATOR);
    for (const name of names) applyAction(vars, name, 'prepend', block, PATH_LIST_SEPARATOR);
  }
}

/**
 * Apply the user's `<platform>/env/` files. The file name is the variable name as is (no suffixes); values
 * for path-list variables are prepended with the path separator, everything else is overridden.
 */
export function applyUserEnv(vars: EnvVars, files: readonly EnvFile[]): void {
  const pathVars = new Set(POSIX_PATH_VARS);
  for (const f of sortByName(files)) {
    if (f.fileName === '' || f.fileName.includes('=')) continue;
    if (pathVars.has(f.fileName)) applyAction(vars, f.fileName, 'prepend', f.value, PATH_LIST_SEPARATOR);
    else vars.set(f.fileName, f.value);
  }
}

/** Apply the operator's `<build-config>/env/` files: suffix rules, unsuffixed files act as `default`. */
export function applyBuildConfigEnv(vars: EnvVars, files: readonly EnvFile[]): void {
  applyLayerEnvDirs(vars, [[...files]], { defaultAction: 'default' });
}

/** The environment as a plain object for a child process. */
export function envToRecord(vars: EnvVars): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of [...vars].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) out[k] = v;
  return out;
}

function sortByName(files: readonly EnvFile[]): EnvFile[] {
  return [...files].sort((a, b) => (a.fileName < b.fileName ? -1 : a.fileName > b.fileName ? 1 : 0));
}

// ----------------------------------------------------------------------------------------------------------
// Readers

/** The subset of `node:fs/promises` the readers need (memfs' `promises` satisfies it). */
export interface EnvFs {
  readdir(path: string, opts: { withFileTypes: true }): Promise<DirentLike[]>;
  readFile(path: string): Promise<Uint8Array | string>;
  stat(path: string): Promise<{ isDirectory(): boolean }>;
}

export interface DirentLike {
  name: string | Uint8Array;
  isDirectory(): boolean;
  isSymbolicLink(): boolean;
}

export const hostFs: EnvFs = nodeFs as unknown as EnvFs;

/** Read the regular files of an env dir in name order; a missing dir is empty. Subdirectories are skipped. */
export async function readEnvDir(dir: string, fs: EnvFs = hostFs): Promise<EnvFile[]> {
  let entries: DirentLike[];
  try {
    entries = await fs.readdir(dir, { withFileTypes: true });
  } catch (err) {
    if (isNotFound(err)) return [];
    throw err;
  }
  const out: EnvFile[] = [];
  for (const e of entries) {
    const name = String(e.name);
    if (e.isDirectory()) continue;
    const path = join(dir, name);
    if (e.isSymbolicLink()) {
      const target = await fs.stat(path).catch(() => undefined);
      if (!target || target.isDirectory()) continue;
    }
    const raw = await fs.readFile(path);
    out.push({ fileName: name, value: typeof raw === 'string' ? raw : Buffer.from(raw).toString('utf8') });
  }
  return sortByName(out);
}

/**
 * Expose one buildpack's build layers (sorted by name, absolute paths) to the buildpacks after it: root
 * dirs onto the path variables, then per layer `env/` and `env.build/`.
 */
export async function addBuildLayers(
  vars: EnvVars,
  layerPaths: readonly string[],
  fs: EnvFs = hostFs,
): Promise<void> {
  await addLayers(vars, layerPaths, BUILD_ROOT_DIRS, (l) => [join(l, 'env'), join(l, 'env.build')], fs);
}

/**
 * Apply one buildpack's launch layers (sorted by name, absolute paths) as the launcher does for
 * `processType` (or for no particular process): root dirs, then `env/`, `env.launch/`, `env.launch/<type>/`.
 */
export async function addLaunchLayers(
  vars: EnvVars,
  layerPaths: readonly string[],
  processType: string | undefined,
  fs: EnvFs = hostFs,
): Promise<void> {
  await addLayers(
    vars,
    layerPaths,
    LAUNCH_ROOT_DIRS,
    (l) => [
      join(l, 'env'),
      join(l, 'env.launch'),
      ...(processType ? [join(l, 'env.launch', processType)] : []),
    ],
    fs,
  );
}

async function addLayers(
  vars: EnvVars,
  layerPaths: readonly string[],
  rootDirs: Readonly<Record<string, readonly string[]>>,
  envDirsOf: (layer: string) => string[],
  fs: EnvFs,
): Promise<void> {
  const present = new Set<string>();
  for (const l of layerPaths) {
    for (const d of Object.keys(rootDirs)) if (await isDir(join(l, d), fs)) present.add(join(l, d));
  }
  prependLayerRootDirs(vars, layerPaths, (l, d) => present.has(join(l, d)), rootDirs);
  for (const l of layerPaths) {
    const dirs: EnvFile[][] = [];
    for (const d of envDirsOf(l)) dirs.push(await readEnvDir(d, fs));
    applyLayerEnvDirs(vars, dirs, { defaultAction: 'override' });
  }
}
