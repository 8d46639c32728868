import { randomBytes } from 'node:crypto';
import { chown, mkdir, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import pLimit from 'p-limit';
import { extractLayer } from '../archive/extract.js';
import { apiAtLeast } from '../util/api-version.js';
import { buildpackLayersDir, encodeRestoredLayerToml, escapeId } from '../buildpack/layers.js';
import { DEFAULT_IMAGE_LAYERS_DIR, type OpenedCache } from '../cache/open.js';
import { cachedLayersFor } from '../cache/metadata.js';
import type { Digest } from '../oci/digest.js';
import type { AnalyzedFile } from '../platform/files.js';
import {
  type BuildpackLayerMetadata,
  type LifecycleMetadata,
  LifecycleMetadataSchema,
} from '../platform/labels.js';
import { isDir, writeFileAtomic } from '../util/fs.js';
import { type Logger, silentLogger } from '../util/log.js';
import { stringifyToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';

export interface RestoreGroupEntry {
  id: string;
  version: string;
  api: string;
}

export interface RestoreOptions {
  layersDir: string;
  group: readonly RestoreGroupEntry[];
  /** The previous image's lifecycle metadata (analyzed.toml `[metadata]`); undefined on a first build. */
  previousMetadata?: LifecycleMetadata;
  /** The opened build cache, when the platform gave one. */
  cache?: OpenedCache;
  platformApi: string;
  /** `-skip-layers`: restore store.toml only. */
  skipLayers?: boolean;
  /** The layers dir as seen inside images (cached tars hold `<it>/<bp>/<layer>/…`). Default /layers. */
  imageLayersDir?: string;
  /**
   * `-uid`/`-gid`: owner of what is restored, applied only when running as root (the reference restorer runs
   * as root and hands the layers to the build user). Extracted contents keep the owners recorded in the tar.
   */
  uid?: number;
  gid?: number;
  /** Layers extracted at once (default 4). */
  concurrency?: number;
  /**
   * Layer dirs the reused build dir still holds from the previous build (see phase/layer-state.ts): one whose
   * tree still has its recorded fingerprint and whose recorded diffID is the cached layer's is kept instead of
   * extracted again. Every other candidate dir is removed, so what is left is what a fresh restore gives.
   */
  keep?: KeepCandidates;
  logger?: Logger;
  signal?: AbortSignal;
}

export interface KeepCandidates {
  /** `<buildpack id>:<layer>` of every layer dir left in the layers dir. */
  candidates: readonly string[];
  /** The diffID recorded for `dir` when its tree is unchanged since then. */
  recorded(key: string, dir: string): Promise<string | undefined>;
}

/** `kept`: a cache layer whose dir was still there, unchanged since the last build (not extracted). */
export type RestoredLayerOutcome = 'metadata' | 'content' | 'kept';

export interface RestoredLayer {
  buildpack: string;
  layer: string;
  sha: string;
  restored: RestoredLayerOutcome;
}

export interface SkippedLayer {
  buildpack: string;
  layer: string;
  reason: string;
}

export interface RestoreResult {
  layers: RestoredLayer[];
  skipped: SkippedLayer[];
  storeFiles: string[];
}

/** The previous image's metadata from analyzed.toml; unreadable metadata means "no previous image" (warned). */
export function previousMetadataFromAnalyzed(
  analyzed: AnalyzedFile | undefined,
  source: string,
  logger: Logger = silentLogger,
): LifecycleMetadata | undefined {
  if (!analyzed?.metadata) return undefined;
  try {
    return parseWith(LifecycleMetadataSchema, analyzed.metadata, `${source} [metadata]`);
  } catch (err) {
    logger.warn(`ignoring previous image metadata: ${(err as Error).message}`);
    return undefined;
  }
}

interface Plan {
  bp: RestoreGroupEntry;
  name: string;
  meta: BuildpackLayerMetadata;
  content: boolean;
  /** The previous image records the layer (its metadata line says "from app image"). */
  fromAppImage: boolean;
}

/**
 * The restorer (platform.md "restorer", buildpack.md "Layer Types"):
 * - `<layers>/<bp>/store.toml` from the previous image's metadata (also with skip-layers);
 * - launch=true, cache=false, build=false layers of the previous image: `<layer>.toml` ([metadata] only)
 *   and `<layer>.sha`, no contents — the exporter reuses the previous image's layer if the buildpack keeps it;
 * - cache=true layers: `<layer>.toml`, `<layer>.sha` and contents from the cache, all or nothing. A layer that
 *   is also launch=true is restored only when the previous image records the same diffID (or, Platform API
 *   0.14+, does not record the layer at all);
 * - contents are verified against the cached diffID; a mismatch removes the layer again.
 * Buildpacks that are not in the group get nothing. Restored `<layer>.toml` files never carry [types].
 */
export async function restore(opts: RestoreOptions): Promise<RestoreResult> {
  const logger = opts.logger ?? silentLogger;
  const result: RestoreResult = { layers: [], skipped: [], storeFiles: [] };
  const prev = opts.previousMetadata;
  const owner = ownerFor(opts);
  const cacheMeta = opts.cache ? await opts.cache.metadata() : undefined;
  const plans: Plan[] = [];

  for (const bp of opts.group) {
    const bpDir = buildpackLayersDir(opts.layersDir, bp.id);
    const prevBp = prev?.buildpacks.find((b) => b.key === bp.id);
    if (prevBp?.store?.metadata !== undefined) {
      const path = join(bpDir, 'store.toml');
      await writeOwned(path, stringifyToml({ metadata: prevBp.store.metadata }), owner);
      result.storeFiles.push(path);
    }
    if (opts.skipLayers) continue;

    const appLayers = prevBp?.layers ?? {};
    const cached = cacheMeta ? cachedLayersFor(cacheMeta, bp.id) : {};
    const skip = (name: string, reason: string) => {
      logger.info(`Skipping restore for layer "${bp.id}:${name}": ${reason}`);
      result.skipped.push({ buildpack: bp.id, layer: name, reason });
    };

    for (const [name, meta] of Object.entries(appLayers).sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (!meta.launch) continue;
      if (meta.cache) {
        const c = cached[name];
        if (!c) skip(name, 'launch and cache layer not in the cache');
        else if (c.sha !== meta.sha)
          skip(name, 'the cache holds a different version than the previous image');
        else plans.push({ bp, name, meta: c, content: true, fromAppImage: true });
        continue;
      }
      // build=true layers are not restored unless cached (the next build would see stale build-time data).
      if (meta.build) continue;
      plans.push({ bp, name, meta, content: false, fromAppImage: true });
    }
    for (const [name, meta] of Object.entries(cached).sort(([a], [b]) => (a < b ? -1 : 1))) {
      if (!meta.cache) continue;
      // A layer the previous image records was decided above from that record (restored or skipped).
      if (appLayers[name]?.launch) continue;
      if (meta.launch) {
        if (!apiAtLeast(opts.platformApi, '0.14')) {
          skip(name, 'launch and cache layer not in the previous image');
          continue;
        }
      }
      plans.push({ bp, name, meta, content: true, fromAppImage: false });
    }
  }

  const kept = await keptLayers(opts, plans, logger);
  const limit = pLimit(opts.concurrency ?? 4);
  const imageLayersDir = (opts.imageLayersDir ?? DEFAULT_IMAGE_LAYERS_DIR).replace(/^\/+|\/+$/g, '');
  await Promise.all(
    plans.map((p) =>
      limit(async () => {
        opts.signal?.throwIfAborted();
        const bpDir = buildpackLayersDir(opts.layersDir, p.bp.id);
        const isKept = kept.has(`${p.bp.id}:${p.name}`);
        if (p.content && !isKept) {
          const why = await restoreContent({ ...opts, cache: opts.cache!, bpDir, plan: p, imageLayersDir });
          if (why) {
            // The reference's wording: platforms grep for it.
            logger.warn(`Skipping restore for layer ${p.bp.id}:${p.name}: ${why}`);
            result.skipped.push({ buildpack: p.bp.id, layer: p.name, reason: why });
            return;
          }
        }
        await writeLayerFiles(bpDir, p, owner);
        // The reference restorer's lines (Go %q quoting): metadata first, then the cached data.
        const id = JSON.stringify(`${p.bp.id}:${p.name}`);
        logger.info(`Restoring metadata for ${id} from ${p.fromAppImage ? 'app image' : 'cache'}`);
        if (isKept) logger.info(`Keeping data for ${id}: unchanged since the last build (${p.meta.sha})`);
        else if (p.content) logger.info(`Restoring data for ${id} from cache`);
        result.layers.push({
          buildpack: p.bp.id,
          layer: p.name,
          sha: p.meta.sha,
          restored: isKept ? 'kept' : p.content ? 'content' : 'metadata',
        });
      }),
    ),
  );
  // Parallel extraction finishes in any order; report in group order, then by layer name.
  const rank = (l: { buildpack: string; layer: string }) => opts.group.findIndex((b) => b.id === l.buildpack);
  const byGroup = (a: { buildpack: string; layer: string }, b: { buildpack: string; layer: string }) =>
    rank(a) - rank(b) || (a.layer < b.layer ? -1 : a.layer > b.layer ? 1 : 0);
  result.layers.sort(byGroup);
  result.skipped.sort(byGroup);
  return result;
}

/**
 * Which content plans keep the layer dir already there (fingerprint unchanged and recorded diffID = the cached
 * sha); every other candidate dir is removed before anything is extracted.
 */
async function keptLayers(opts: RestoreOptions, plans: Plan[], logger: Logger): Promise<Set<string>> {
  const kept = new Set<string>();
  if (!opts.keep) return kept;
  for (const p of plans) {
    if (!p.content) continue;
    const key = `${p.bp.id}:${p.name}`;
    if (!opts.keep.candidates.includes(key)) continue;
    const dir = join(buildpackLayersDir(opts.layersDir, p.bp.id), p.name);
    const recorded = await opts.keep.recorded(key, dir);
    const why =
      recorded === undefined
        ? 'changed since the last build'
        : recorded !== p.meta.sha
          ? `was ${recorded}, the cache has ${p.meta.sha}`
          : // As for an extracted layer, the cache must still hold it: a layer it lost is not restored.
            !(await opts.cache?.hasLayer(p.meta.sha as Digest))
            ? 'the cache no longer holds it'
            : undefined;
    if (why === undefined) kept.add(key);
    else logger.debug(`layer ${key}: ${why}; not kept`);
  }
  for (const key of opts.keep.candidates) {
    if (kept.has(key)) continue;
    const i = key.indexOf(':');
    const dir = join(buildpackLayersDir(opts.layersDir, key.slice(0, i)), key.slice(i + 1));
    await rm(dir, { recursive: true, force: true });
  }
  return kept;
}

/** `<layer>.toml` ([metadata] only) and `<layer>.sha` (the diffID the layer was recorded with). */
async function writeLayerFiles(bpDir: string, p: Plan, owner: Owner | undefined): Promise<void> {
  const data = p.meta.data;
  const metadata =
    data && typeof data === 'object' && !Array.isArray(data) ? (data as Record<string, unknown>) : {};
  await writeOwned(join(bpDir, `${p.name}.toml`), encodeRestoredLayerToml(metadata), owner);
  await writeOwned(join(bpDir, `${p.name}.sha`), p.meta.sha, owner);
}

type Owner = { uid: number; gid: number };

function ownerFor(opts: RestoreOptions): Owner | undefined {
  if (opts.uid === undefined || opts.gid === undefined || process.getuid?.() !== 0) return undefined;
  return { uid: opts.uid, gid: opts.gid };
}

async function writeOwned(path: string, text: string, owner: Owner | undefined): Promise<void> {
  await writeFileAtomic(path, text);
  if (owner) {
    await chown(dirname(path), owner.uid, owner.gid);
    await chown(path, owner.uid, owner.gid);
  }
}

/**
 * Extract the cached tar into a scratch dir inside the layers dir (same filesystem), check its diffID, then
 * rename the layer dir into place. Returns why it was not restored, or undefined.
 */
async function restoreContent(
  opts: RestoreOptions & { cache: OpenedCache; bpDir: string; plan: Plan; imageLayersDir: string },
): Promise<string | undefined> {
  const { plan, cache } = opts;
  const sha = plan.meta.sha as Digest;
  if (!(await cache.hasLayer(sha))) return `cached layer ${sha} is missing from ${cache.description}`;
  const scratch = join(opts.layersDir, `.restore-${randomBytes(6).toString('hex')}`);
  try {
    const res = await extractLayer({
      source: await cache.layer(sha),
      dest: scratch,
      name: `cached layer ${plan.bp.id}:${plan.name} (${sha})`,
      preserveOwner: ownerFor(opts) !== undefined,
      ...(opts.signal ? { signal: opts.signal } : {}),
    });
    if (res.diffId !== sha) return `cached layer content is ${res.diffId}, expected ${sha}`;
    const inTar = join(
      scratch,
      ...opts.imageLayersDir.split('/').filter(Boolean),
      escapeId(plan.bp.id),
      plan.name,
    );
    if (!(await isDir(inTar))) return `cached layer ${sha} has no ${inTar.slice(scratch.length + 1)}/`;
    const dest = join(opts.bpDir, plan.name);
    await mkdir(opts.bpDir, { recursive: true });
    await rm(dest, { recursive: true, force: true });
    await rename(inTar, dest);
    return undefined;
  } catch (err) {
    if (opts.signal?.aborted) throw err;
    return `cannot extract ${sha}: ${(err as Error).message}`;
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}
