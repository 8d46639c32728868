import { createReadStream } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { collectBuildpacks } from '../api/buildpacks.js';
import type { BuildPlan, TargetPlan } from '../api/plan.js';
import { digestFile, writeLayer } from '../archive/index.js';
import { isBuilderImage, resolveBuilder } from '../builder/resolve.js';
import { orderFromToml } from '../buildpack/descriptor.js';
import { dirCachePaths, openDirCache } from '../cache/dir-cache.js';
import { parseCacheMetadata } from '../cache/metadata.js';
import type { ImageStore } from '../image/store.js';
import type { Digest } from '../oci/digest.js';
import { ImageManifestSchema } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { isDir } from '../util/fs.js';
import { silentLogger } from '../util/log.js';
import { stringifyToml } from '../util/toml.js';
import { parseJson, parseWith } from '../util/validate.js';
import { type BlobCache, type BlobReceiver, openBlobCache } from './blob-cache.js';
import type { BlobSource } from './client.js';
import { readDirCacheState } from './node-inputs.js';
import type { DirCacheState, LocalImage, TargetJob } from './protocol.js';

/**
 * The coordinator's side of what exists only on this machine (protocol 3), for remote nodes:
 *
 * - An image in a local store (an `oci:` builder, build or run image, a registry image that --pull-policy
 *   found in the default local layout, or the default builder packfarm made here): the target's image
 *   manifest (only the child for its platform), config and layers are offered as blobs.
 * - A builder directory (builder.toml, or a /cnb-like dir): resolved here as a local build resolves it
 *   (buildpacks staged from their `uri`s), written as a /cnb-like dir (order.toml, run.toml, buildpacks/)
 *   and offered as one deterministic tar, so the same definition is the same blob (sent once per node).
 *   builder.toml's `[build] image` goes to the node as the job's build image.
 * - `--cache-dir`: the committed cache of the target's platform (metadata and layer tars, each tar's digest
 *   being its diffID) is offered; the node's new cache comes back and is committed here (cache-return below).
 */
export interface LocalInputs {
  /** The blobs a target needs beyond the app and buildpacks, and the job fields naming them. */
  forTarget(target: TargetPlan): Promise<{ blobs: BlobSource[]; spec: Partial<TargetJob> }>;
}

export async function prepareLocalInputs(plan: BuildPlan, dir: string): Promise<LocalInputs> {
  refuseLocalStores(plan);
  const builderDir = await stageBuilderDir(plan, dir);
  const images = new Map<string, Promise<{ image: LocalImage; blobs: BlobSource[] }>>();
  const imageFor = (role: LocalImage['role'], name: string, store: ImageStore, digest: Digest) => {
    const key = `${role} ${digest}`;
    let p = images.get(key);
    if (!p) {
      p = localImage(role, name, store, digest);
      images.set(key, p);
    }
    return p;
  };
  return {
    async forTarget(target) {
      const blobs: BlobSource[] = [];
      const spec: Partial<TargetJob> = {};
      const list: LocalImage[] = [];
      const build = target.buildImage;
      if (build && isLocal(build.store)) {
        const role = target.builder !== undefined && target.builder === build.name ? 'builder' : 'build';
        const got = await imageFor(role, build.name, build.store, build.digest);
        list.push(got.image);
        blobs.push(...got.blobs);
      } else if (build && builderDir) {
        // builder.toml's [build] image, a registry reference: the node pulls it.
        spec.buildImage = build.name;
      }
      const run = target.runImage;
      if (isLocal(run.store)) {
        const got = await imageFor('run', run.name, run.store, run.digest);
        list.push(got.image);
        blobs.push(...got.blobs);
      }
      if (list.length > 0) spec.images = list;
      if (builderDir) {
        blobs.push(builderDir.source);
        spec.builderDir = {
          digest: builderDir.source.digest,
          size: builderDir.source.size,
          name: builderDir.name,
        };
      }
      if (plan.options.cacheDir) {
        const cache = await offeredCache(plan.options.cacheDir, target, plan.options.clearCache);
        blobs.push(...cache.blobs);
        spec.cacheDir = cache.state;
      }
      return { blobs, spec };
    },
  };
}

/**
 * A cache image or previous image in a layout of this machine would be written (or read) at the same path on
 * the node's disk instead: refused rather than built wrong.
 */
function refuseLocalStores(plan: BuildPlan): void {
  const o = plan.options;
  const cache = plan.cache?.location;
  const checks: Array<[string, string | undefined, ImageStore | undefined]> = [
    ['--cache-image', o.cacheImage, cache?.kind === 'image' ? cache.store : undefined],
    ['--previous-image', o.previousImage, plan.previousImage?.store],
  ];
  for (const [flag, value, store] of checks)
    if (value && store && isLocal(store))
      throw new PackfarmError(
        'FARM_UNSUPPORTED',
        `${flag} ${value}: an image in a layout of this machine cannot be used by remote farm nodes`,
        {
          hint:
            flag === '--cache-image'
              ? 'use --cache-dir DIR (nodes get it and send their new cache back), or a registry cache image'
              : 'push it to a registry the nodes can reach, or build with the local node only',
        },
      );
}

/** A store on this machine (an OCI layout): the nodes cannot reach it. */
function isLocal(store: ImageStore): boolean {
  return store.registryRepository === undefined;
}

/** An image of a local store narrowed to one manifest: the job's description and its blobs (manifest first). */
export async function localImage(
  role: LocalImage['role'],
  name: string,
  store: ImageStore,
  digest: Digest,
): Promise<{ image: LocalImage; blobs: BlobSource[] }> {
  const m = await store.getManifest(digest);
  const source = `${role} image ${name} (${digest})`;
  const doc = parseWith(ImageManifestSchema, parseJson(m.bytes.toString('utf8'), source), source);
  const fromStore = (d: Digest, size: number): BlobSource => ({
    digest: d,
    size,
    // getBlob verifies the bytes against the digest as they stream.
    open: () =>
      Readable.from(
        (async function* () {
          yield* await store.getBlob(d);
        })(),
      ),
  });
  const image: LocalImage = {
    role,
    name,
    manifest: { digest: m.digest, size: m.bytes.length, mediaType: m.mediaType },
    config: { digest: doc.config.digest as Digest, size: doc.config.size },
    layers: doc.layers.map((l) => ({ digest: l.digest as Digest, size: l.size })),
  };
  const bytes = m.bytes;
  return {
    image,
    blobs: [
      { digest: m.digest, size: bytes.length, open: () => Readable.from([bytes]) },
      fromStore(image.config.digest, image.config.size),
      ...image.layers.map((l) => fromStore(l.digest, l.size)),
    ],
  };
}

/** `--builder DIR` (or project.toml's): resolved, written as a /cnb-like dir, tarred. Undefined for images. */
async function stageBuilderDir(
  plan: BuildPlan,
  dir: string,
): Promise<{ name: string; source: BlobSource } | undefined> {
  const name = plan.options.builder ?? plan.project?.builder;
  if (!name || (await isBuilderImage(name, plan.cwd))) return undefined;
  const scratch = join(dir, 'builder-scratch');
  const resolved = await resolveBuilder(name, {
    cwd: plan.cwd,
    scratchDir: scratch,
    insecureRegistries: plan.insecureRegistries,
  });
  try {
    const cnb = join(dir, 'builder-cnb');
    await mkdir(cnb, { recursive: true });
    await collectBuildpacks(resolved.store, orderFromToml(resolved.order.order), join(cnb, 'buildpacks'));
    await writeFile(join(cnb, 'order.toml'), stringifyToml(resolved.order as never));
    const [image, ...mirrors] = resolved.runImages;
    if (image) await writeFile(join(cnb, 'run.toml'), stringifyToml({ images: [{ image, mirrors }] }));
    const out = join(dir, 'builder.tar.gz');
    await writeLayer({ dir: cnb, out });
    const d = await digestFile(out);
    return { name, source: { digest: d.digest, size: d.size, open: () => createReadStream(out) } };
  } finally {
    await resolved.cleanup();
    await rm(scratch, { recursive: true, force: true });
  }
}

/** --cache-dir: the committed cache of the target's platform (empty with --clear-cache or none yet). */
async function offeredCache(
  cacheDir: string,
  target: TargetPlan,
  clear: boolean,
): Promise<{ state: DirCacheState; blobs: BlobSource[] }> {
  const empty = { state: { metadata: '', layers: [] }, blobs: [] };
  if (clear) return empty;
  // As the dir cache reads: the platform's own, else a reference lifecycle's `<dir>/committed`.
  const own = dirCachePaths(cacheDir, target.platform).committed;
  const committed = (await isDir(own)) ? own : join(cacheDir, 'committed');
  const found = await readDirCacheState(committed);
  if (!found) return empty;
  try {
    parseCacheMetadata(found.state.metadata, committed);
  } catch {
    return empty; // a damaged cache costs a slower build, never a failed one (as locally)
  }
  return {
    state: found.state,
    blobs: [...found.files].map(([digest, path]) => ({
      digest,
      size: found.state.layers.find((l) => l.digest === digest)?.size ?? 0,
      open: () => createReadStream(path),
    })),
  };
}

/**
 * --cache-dir, the way back: the layers of the node's new cache that this cache dir lacks arrive into the
 * staging dir of a dir-cache write (so they are on the cache's own disk), then `commit` swaps the new cache
 * in for the platform exactly as a local build's export does (atomic; per-platform subdirectory).
 */
export interface CacheReturn {
  has(d: Digest): Promise<boolean>;
  receive(d: Digest): BlobReceiver;
  commit(state: DirCacheState): Promise<void>;
  abort(): Promise<void>;
}

export async function startCacheReturn(cacheDir: string, target: TargetPlan): Promise<CacheReturn> {
  const backend = openDirCache(cacheDir, target.platform, silentLogger);
  const writer = await backend.startWrite();
  const incomingDir = join(writer.tempDir, 'incoming');
  const incoming: BlobCache = openBlobCache(incomingDir);
  return {
    has: (d) => backend.hasLayer(d),
    receive: (d) => incoming.receive(d),
    async commit(state) {
      try {
        const meta = parseCacheMetadata(state.metadata, `the cache of ${target.name} sent back by its node`);
        for (const l of state.layers) {
          if (await incoming.has(l.digest))
            await writer.add(incoming.path(l.digest), { diffId: l.digest, digest: l.digest, size: l.size });
          else if (await backend.hasLayer(l.digest)) await writer.reuse(l.digest);
          else
            throw new PackfarmError(
              'BLOB_MISSING',
              `the cache of ${target.name}: layer ${l.digest} was neither sent back nor in ${cacheDir}`,
            );
        }
        await rm(incomingDir, { recursive: true, force: true });
        await writer.commit(meta);
      } finally {
        await writer.abort();
      }
    },
    abort: () => writer.abort(),
  };
}
