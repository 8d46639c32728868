import { join } from 'node:path';
import { type EnvFs, type EnvVars, addLaunchLayers, hostFs } from '../buildpack/env.js';

/** A launch layer as the image will hold it, and where its files are now. */
export interface LaunchLayerPaths {
  buildpackId: string;
  name: string;
  /** Directory on this machine (`<layers>/<bp>/<layer>`). */
  hostPath: string;
  /** Directory in the image (`/layers/<bp>/<layer>`). */
  imagePath: string;
}

/** Parse `K=V` entries of an image config Env (first `=` splits; entries without one are dropped). */
export function envFromConfig(entries: readonly string[] | null | undefined): EnvVars {
  const vars: EnvVars = new Map();
  for (const e of entries ?? []) {
    const i = e.indexOf('=');
    if (i > 0) vars.set(e.slice(0, i), e.slice(i + 1));
  }
  return vars;
}

/** Back to config Env entries, sorted by name so the config bytes never depend on insertion order. */
export function envToConfig(vars: EnvVars): string[] {
  return [...vars].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0)).map(([k, v]) => `${k}=${v}`);
}

/**
 * An fs that reads image paths from where the layers are now, so env values name image paths
 * (`/layers/<bp>/<layer>/bin`) while the files are read from the build's layers dir.
 */
function mappedFs(layers: readonly LaunchLayerPaths[]): EnvFs {
  const map = (p: string): string => {
    for (const l of layers) {
      if (p === l.imagePath) return l.hostPath;
      if (p.startsWith(`${l.imagePath}/`)) return join(l.hostPath, p.slice(l.imagePath.length + 1));
    }
    return p;
  };
  return {
    readdir: (p, o) => hostFs.readdir(map(p), o),
    readFile: (p) => hostFs.readFile(map(p)),
    stat: (p) => hostFs.stat(map(p)),
  };
}

/**
 * The environment a process starts with, computed at export time the way the launcher computes it at start:
 * `base` (the run image's Env), then per buildpack in group order its launch layers in name order: root dirs
 * (bin, lib) prepended to the path variables, then `env/`, `env.launch/`, and `env.launch/<processType>/`
 * when a process type is given.
 */
export async function computeLaunchEnv(opts: {
  base: EnvVars;
  layers: readonly LaunchLayerPaths[];
  /** Buildpack IDs in group order. */
  buildpackOrder: readonly string[];
  processType?: string | undefined;
}): Promise<EnvVars> {
  const vars: EnvVars = new Map(opts.base);
  const fs = mappedFs(opts.layers);
  for (const bp of opts.buildpackOrder) {
    const paths = opts.layers
      .filter((l) => l.buildpackId === bp)
      .map((l) => l.imagePath)
      .sort();
    if (paths.length > 0) await addLaunchLayers(vars, paths, opts.processType, fs);
  }
  return vars;
}

/** Variables whose value in `specific` differs from (or is missing in) `general`, sorted by name. */
export function envDifference(general: EnvVars, specific: EnvVars): Array<[string, string]> {
  return [...specific]
    .filter(([k, v]) => general.get(k) !== v)
    .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
}
