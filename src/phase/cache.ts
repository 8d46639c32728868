import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import { writeLayer } from '../archive/layer-writer.js';
import { buildpackLayersDir, escapeId, readBuildpackLayers } from '../buildpack/layers.js';
import type { CacheMetadata } from '../cache/metadata.js';
import { type CacheLocation, DEFAULT_IMAGE_LAYERS_DIR, type OpenedCache, openCache } from '../cache/open.js';
import type { Digest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import type { BuildpackLayersMetadata } from '../platform/labels.js';
import { type Logger, silentLogger } from '../util/log.js';
import { discard } from '../util/stream.js';
import { REPRODUCIBLE_EPOCH } from '../util/time.js';
import { type LayerTracker, type TarParams, layerKey } from './layer-state.js';

/**
 * The cache phase of the exporter (the reference lifecycle's `phase/cache.go`): save the group's cache=true
 * layers as the new build cache. The two cache backends live in cache/.
 */

/**
 * Owner of cached layer entries unless -uid/-gid say otherwise: the exporter's default for buildpack layers,
 * so a launch+cache layer tars to the same diffID for the app image and the cache.
 */
export const DEFAULT_LAYER_OWNER = 1000;

export interface CacheGroupEntry {
  id: string;
  version: string;
  api: string;
}

export interface ExportCacheOptions {
  location: CacheLocation;
  layersDir: string;
  group: readonly CacheGroupEntry[];
  target: Platform;
  /** Tar entry mtimes and the cache image's creation time (default 1980-01-01T00:00:01Z). */
  creationTime?: Date;
  /** Owner of the tar entries (default 1000:1000, as the exporter's buildpack layers). */
  uid?: number;
  gid?: number;
  /**
   * The cache as the restorer saw it (reused by diffID). Default: the location opened afresh; pass an
   * `openCache(..., {clear: true})` result to export without reusing anything.
   */
  previous?: OpenedCache;
  /**
   * diffIDs the caller already computed for layers (key `<buildpack id>:<layer name>`), e.g. the exporter for
   * launch+cache layers. They must be of the very tar this function would write (same prefix, mtime and
   * owner); a layer whose known diffID is in the previous cache is reused without being read at all.
   */
  knownDiffIds?: ReadonlyMap<string, Digest>;
  /**
   * The build dir's layer records (phase/layer-state.ts): a cache layer dir the export did not hash whose tree
   * is unchanged since it was recorded gets its recorded diffID without being read; the ones hashed are noted.
   */
  layerTracker?: LayerTracker;
  /** The layers dir as seen inside the image: cached tars hold `<imageLayersDir>/<bp>/<layer>/…` (default /layers). */
  imageLayersDir?: string;
  logger?: Logger;
  signal?: AbortSignal;
}

export interface ExportedCacheLayer {
  buildpack: string;
  layer: string;
  diffId: Digest;
  outcome: 'reused' | 'added';
}

export interface ExportCacheResult {
  layers: ExportedCacheLayer[];
  metadata: CacheMetadata;
}

/**
 * Save every cache=true layer of the group (contents + `<layer>.toml` data) as the new cache for `target`.
 * A layer whose freshly computed diffID is already in the previous cache is kept by reference: its tar is
 * not moved or uploaded again. Nothing is visible to readers until the final commit; on failure the staged
 * files are removed and the previous cache stays as it was.
 */
export async function exportCache(opts: ExportCacheOptions): Promise<ExportCacheResult> {
  const logger = opts.logger ?? silentLogger;
  const cache =
    opts.previous ??
    (await openCache(opts.location, opts.target, {
      logger,
      ...(opts.creationTime ? { creationTime: opts.creationTime } : {}),
    }));
  const backend = cache.backend;
  // Reading the previous metadata makes sure a mismatching/damaged cache is detected (and logged) before reuse.
  const previousHasLayers = (await backend.metadata()).buildpacks.length > 0;
  const writer = await backend.startWrite(opts.creationTime ? { creationTime: opts.creationTime } : {});
  const imageLayersDir = (opts.imageLayersDir ?? DEFAULT_IMAGE_LAYERS_DIR).replace(/^\/+|\/+$/g, '');
  const result: ExportedCacheLayer[] = [];
  const meta: CacheMetadata = { buildpacks: [] };
  const tracker = opts.layerTracker;
  // A cached file the last build verified and nobody touched since needs no second read (spec/cache.md).
  const cacheBlobUnchanged = async (d: Digest): Promise<boolean> => {
    if (!tracker || !backend.layerStamp) return false;
    const stamp = await backend.layerStamp(d);
    return stamp !== undefined && tracker.cacheBlobVerified(d, stamp);
  };
  try {
    let n = 0;
    for (const bp of opts.group) {
      const layers = await readBuildpackLayers(buildpackLayersDir(opts.layersDir, bp.id), {
        buildpackApi: bp.api,
      });
      const entry: BuildpackLayersMetadata = { key: bp.id, version: bp.version, layers: {} };
      for (const layer of layers) {
        if (!layer.types.cache) continue;
        if (!layer.hasDir) {
          logger.warn(`layer ${bp.id}:${layer.name} is cache=true but has no contents; not cached`);
          continue;
        }
        opts.signal?.throwIfAborted();
        const tarOptions = {
          dir: layer.path,
          prefix: [imageLayersDir, escapeId(bp.id), layer.name].filter((s) => s !== '').join('/'),
          ...(opts.creationTime ? { mtime: opts.creationTime } : {}),
          uid: opts.uid ?? DEFAULT_LAYER_OWNER,
          gid: opts.gid ?? DEFAULT_LAYER_OWNER,
          ...(opts.signal ? { signal: opts.signal } : {}),
        };
        const key = layerKey(bp.id, layer.name);
        let diffId = opts.knownDiffIds?.get(key);
        let note = (_d: Digest) => {};
        if (diffId === undefined && opts.layerTracker) {
          const tracker = opts.layerTracker;
          const tar: TarParams = {
            prefix: tarOptions.prefix,
            uid: tarOptions.uid,
            gid: tarOptions.gid,
            mtime: (opts.creationTime ?? REPRODUCIBLE_EPOCH).toISOString(),
          };
          const fp = await tracker.fingerprint(layer.path);
          note = (d) => tracker.note(key, layer.path, tar, d, fp);
          diffId = tracker.trusted(key, tar, fp);
          if (diffId !== undefined)
            logger.debug(`cache layer '${key}': unchanged since the last build (stat data)`);
        }
        if (diffId === undefined && backend.compression === 'gzip' && previousHasLayers) {
          // Hash the plain tar first: an unchanged layer then costs no gzip, no file and no upload.
          diffId = (await writeLayer({ ...tarOptions, out: discard(), compression: 'none' })).diffId;
        }
        let outcome: 'reused' | 'added';
        let sha: Digest;
        // A cached copy is reused only when it is intact; a damaged one is replaced by the fresh layer.
        const verdicts = new Map<Digest, boolean>();
        const canReuse = async (d: Digest): Promise<boolean> => {
          let ok = verdicts.get(d);
          if (ok === undefined && (await cacheBlobUnchanged(d))) {
            logger.debug(`cache layer ${d}: verified by the last build, unchanged since (stat data)`);
            ok = true;
            verdicts.set(d, ok);
          }
          if (ok === undefined) {
            const why = (await backend.hasLayer(d)) ? await backend.verifyLayer(d) : 'absent';
            if (why && why !== 'absent')
              logger.warn(`Skipping reuse for layer ${bp.id}:${layer.name}: ${why}`);
            ok = why === undefined;
            verdicts.set(d, ok);
          }
          return ok;
        };
        if (diffId !== undefined && (await canReuse(diffId))) {
          sha = diffId;
          await writer.reuse(diffId);
          outcome = 'reused';
          logger.info(`Reusing cache layer '${bp.id}:${layer.name}'`);
        } else {
          const file = join(writer.tempDir, `layer-${n++}.tmp`);
          const written = await writeLayer({ ...tarOptions, out: file, compression: backend.compression });
          sha = written.diffId;
          if (await canReuse(sha)) {
            await rm(file, { force: true });
            await writer.reuse(sha);
            outcome = 'reused';
            logger.info(`Reusing cache layer '${bp.id}:${layer.name}'`);
          } else {
            await writer.add(file, { diffId: sha, digest: written.digest, size: written.size });
            outcome = 'added';
            logger.info(`Adding cache layer '${bp.id}:${layer.name}'`);
          }
        }
        note(sha);
        logger.debug(`cache layer '${bp.id}:${layer.name}' SHA: ${sha}`);
        entry.layers[layer.name] = {
          sha,
          data: layer.metadata,
          build: layer.types.build,
          launch: layer.types.launch,
          cache: true,
        };
        result.push({ buildpack: bp.id, layer: layer.name, diffId: sha, outcome });
      }
      if (Object.keys(entry.layers).length > 0) meta.buildpacks.push(entry);
    }
    await writer.commit(meta);
  } catch (err) {
    await writer.abort();
    throw err;
  }
  if (tracker && backend.layerStamp) {
    // Stamped after the commit: linking a reused file into the new cache moves its ctime.
    for (const l of result) {
      const stamp = await backend.layerStamp(l.diffId);
      if (stamp) tracker.noteCacheBlob(l.diffId, stamp);
    }
  }
  return { layers: result, metadata: meta };
}
