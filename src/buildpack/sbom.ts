import { copyFile, mkdir, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PackfarmError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { type LayerTypes, escapeId } from './layers.js';

/** SBOM file extensions and the media types they stand for (buildpack.md "Software-Bill-of-Materials"). */
export const SBOM_EXTENSIONS: Readonly<Record<string, string>> = {
  'cdx.json': 'application/vnd.cyclonedx+json',
  'spdx.json': 'application/spdx+json',
  'syft.json': 'application/vnd.syft+json',
};

/** Where an SBOM ends up: the app image (launch), the build report (build), or the cache (cache). */
export type SbomKind = 'launch' | 'build' | 'cache';

/** One SBOM file of a buildpack and one of the places it is copied to. A cached launch layer has two. */
export interface SbomPlacement {
  kind: SbomKind;
  buildpackId: string;
  /** Undefined for the buildpack-level `launch.sbom.*` / `build.sbom.*` files. */
  layerName: string | undefined;
  /** The file the buildpack wrote. */
  path: string;
  /** `cdx.json`, `spdx.json` or `syft.json`. */
  ext: string;
  mediaType: string;
}

/** Split `<owner>.sbom.<ext>` into owner (a layer name, `launch` or `build`) and extension. */
export function parseSbomFileName(fileName: string): { owner: string; ext: string } | undefined {
  const at = fileName.lastIndexOf('.sbom.');
  if (at <= 0) return undefined;
  const ext = fileName.slice(at + '.sbom.'.length);
  if (ext === '') return undefined;
  return { owner: fileName.slice(0, at), ext };
}

/** The bare media type of a declared `sbom-formats` entry (parameters dropped, case folded). */
export function normalizeMediaType(declared: string): string {
  return (declared.split(';')[0] ?? '').trim().toLowerCase();
}

export interface CollectSbomOptions {
  bpLayersDir: string;
  buildpackId: string;
  /** `sbom-formats` of the buildpack's buildpack.toml. */
  sbomFormats: readonly string[];
  /** Types of the layers the buildpack declared, by layer name. */
  layers: ReadonlyMap<string, LayerTypes>;
  logger?: Logger;
}

/**
 * Find the SBOM files a buildpack wrote and decide where each goes. Fails when a file has an unknown
 * extension or a media type the buildpack did not declare in `sbom-formats`.
 */
export async function collectSbomFiles(opts: CollectSbomOptions): Promise<SbomPlacement[]> {
  const log = opts.logger ?? silentLogger;
  let names: string[];
  try {
    names = (await readdir(opts.bpLayersDir, { withFileTypes: true }))
      .filter((e) => !e.isDirectory())
      .map((e) => e.name)
      .sort();
  } catch (err) {
    if ((err as { code?: string }).code === 'ENOENT') return [];
    throw err;
  }
  const declared = new Set(opts.sbomFormats.map(normalizeMediaType));
  const out: SbomPlacement[] = [];
  for (const name of names) {
    const parsed = parseSbomFileName(name);
    if (!parsed) continue;
    const path = join(opts.bpLayersDir, name);
    const mediaType = SBOM_EXTENSIONS[parsed.ext];
    if (!mediaType) {
      throw new PackfarmError(
        'SBOM_UNSUPPORTED_FORMAT',
        `${path} (buildpack ${opts.buildpackId}): unsupported SBOM file extension .${parsed.ext}; expected one of ` +
          Object.keys(SBOM_EXTENSIONS)
            .map((e) => `.${e}`)
            .join(', '),
      );
    }
    if (!declared.has(mediaType)) {
      throw new PackfarmError(
        'SBOM_UNDECLARED_FORMAT',
        `${path} (buildpack ${opts.buildpackId}): SBOM media type ${mediaType} is not declared in buildpack.toml ` +
          `sbom-formats (declared: ${opts.sbomFormats.length ? opts.sbomFormats.join(', ') : 'none'})`,
        { hint: `add "${mediaType}" to [buildpack] sbom-formats in buildpack.toml` },
      );
    }
    const base = { buildpackId: opts.buildpackId, path, ext: parsed.ext, mediaType };
    if (parsed.owner === 'launch' || parsed.owner === 'build') {
      out.push({ ...base, kind: parsed.owner, layerName: undefined });
      continue;
    }
    const types = opts.layers.get(parsed.owner);
    if (!types) {
      log.warn(`${path}: ignored, there is no layer ${parsed.owner}.toml for this SBOM`);
      continue;
    }
    out.push({ ...base, kind: types.launch ? 'launch' : 'build', layerName: parsed.owner });
    if (types.cache) out.push({ ...base, kind: 'cache', layerName: parsed.owner });
  }
  return out;
}

/** `<layers>/sbom/<kind>/<escaped bp id>/[<layer>/]sbom.<ext>`: the platform's SBOM layout. */
export function sbomDestination(layersDir: string, p: SbomPlacement): string {
  const dir = join(layersDir, 'sbom', p.kind, escapeId(p.buildpackId), ...(p.layerName ? [p.layerName] : []));
  return join(dir, `sbom.${p.ext}`);
}

/** Copy every placement to the platform SBOM layout under `<layers>/sbom/`. */
export async function copySbomFiles(layersDir: string, placements: readonly SbomPlacement[]): Promise<void> {
  for (const p of placements) {
    const dest = sbomDestination(layersDir, p);
    await mkdir(join(dest, '..'), { recursive: true });
    await copyFile(p.path, dest);
  }
}
