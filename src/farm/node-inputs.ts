import { createReadStream } from 'node:fs';
import { copyFile, link, mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { BuildPlan } from '../api/plan.js';
import { extractLayer } from '../archive/extract.js';
import { dirCachePaths } from '../cache/dir-cache.js';
import { CACHE_METADATA_LABEL, parseCacheMetadata } from '../cache/metadata.js';
import { type Digest, digestHex, isDigest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import type { Platform } from '../oci/platform.js';
import { ImageManifestSchema } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { makeTempDir } from '../util/tempdir.js';
import { parseJson, parseWith } from '../util/validate.js';
import type { DirCacheState, LocalImage, TargetJob } from './protocol.js';

/**
 * The node's side of what exists only on the coordinator (protocol 3): images (`oci:` builders, build and run
 * images, the coordinator's default builder), a builder directory and a `--cache-dir`. They arrive as blobs in
 * the node's content-addressed cache; here they become what planBuild reads:
 *
 *   an image      → `<data dir>/farm/images/<manifest hex>/`, an OCI layout of that one image whose blobs are
 *                   hard links to the blob cache (made once, under a temp name then renamed: jobs running at
 *                   the same time either make it or find it, never see half of it)
 *   a builder dir → `<data dir>/farm/builders/<tar hex>/`, the /cnb-like dir extracted (same rule)
 *   a cache dir   → `<job dir>/cache/<platform>/committed/`, links to the blob cache plus the metadata file;
 *                   after the build the committed dir there is the new cache, sent back to the coordinator
 */

/** Every blob the job needs besides the app and buildpacks. */
export function extraBlobDigests(spec: TargetJob): Digest[] {
  const out: Digest[] = [];
  for (const i of [
    ...(spec.images ?? []),
    ...spec.buildpacks.flatMap((b) => ('package' in b ? [b.package] : [])),
    ...(spec.projectBuildpacks ?? []).map((b) => b.package),
  ])
    out.push(i.manifest.digest, i.config.digest, ...i.layers.map((l) => l.digest));
  if (spec.builderDir) out.push(spec.builderDir.digest);
  for (const l of spec.cacheDir?.layers ?? []) out.push(l.digest);
  return out;
}

export interface NodeInputs {
  /** `oci:<layout>@<digest>` or a builder dir, replacing the spec's registry references. */
  builder?: string;
  buildImage?: string;
  runImage?: string;
  /** The job's --cache-dir. */
  cacheDir?: string;
}

/** Lay out what the spec carries as blobs; `blob` gives a digest's path in the node's blob cache. */
export async function materializeInputs(
  spec: TargetJob,
  where: { dataDir: string; jobDir: string; platform: Platform },
  blob: (d: Digest) => string,
): Promise<NodeInputs> {
  const out: NodeInputs = {};
  for (const image of spec.images ?? []) {
    const ref = await materializeImage(where.dataDir, image, blob);
    if (image.role === 'builder') out.builder = ref;
    else if (image.role === 'build') out.buildImage = ref;
    else out.runImage = ref;
  }
  if (spec.builderDir) out.builder = await materializeBuilderDir(where.dataDir, spec.builderDir.digest, blob);
  if (spec.cacheDir) {
    const dir = join(where.jobDir, 'cache');
    await materializeCacheDir(dir, where.platform, spec.cacheDir, blob);
    out.cacheDir = dir;
  }
  return out;
}

/**
 * Planning on the node saw its own copies; the image must say what the coordinator named (the run image's
 * name goes into the image's labels, so a build on any node gives the digest a local build gives).
 */
export function useCoordinatorNames(plan: BuildPlan, spec: TargetJob): void {
  for (const target of plan.targets)
    for (const image of spec.images ?? []) {
      if (image.role === 'run') target.runImage = { ...target.runImage, name: image.name };
      else if (target.buildImage) target.buildImage = { ...target.buildImage, name: image.name };
      if (image.role === 'builder' && target.builder) target.builder = image.name;
    }
  if (spec.builderDir) for (const target of plan.targets) target.builder = spec.builderDir.name;
}

async function linkOrCopy(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return;
    if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw err;
    await copyFile(from, to);
  }
}

/** Make `final` with `fill(tmp)` in a temp dir beside it, then one rename; a concurrent maker may win. */
async function publishDir(final: string, kind: string, fill: (tmp: string) => Promise<void>): Promise<void> {
  if (await pathExists(final)) return;
  const parent = join(final, '..');
  await mkdir(parent, { recursive: true });
  const tmp = await makeTempDir(parent, kind);
  try {
    await fill(tmp);
    await rename(tmp, final);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    await rm(tmp, { recursive: true, force: true });
    // Another job made the same content meanwhile: theirs is as good as ours.
    if ((code === 'ENOTEMPTY' || code === 'EEXIST') && (await pathExists(final))) return;
    throw err;
  }
}

/** An image of the job as an OCI layout in the node's data dir (made once); `oci:<dir>@<digest>`. */
export async function materializeImage(
  dataDir: string,
  image: LocalImage,
  blob: (d: Digest) => string,
): Promise<string> {
  const m = image.manifest;
  const source = `${image.role} image ${image.name} (manifest ${m.digest})`;
  // The spec lists the blobs so the serve process can check they arrived; they must be the manifest's own.
  const doc = parseWith(
    ImageManifestSchema,
    parseJson(await readFile(blob(m.digest), 'utf8'), source),
    source,
    'PROTOCOL_ERROR',
  );
  const listed = [image.config.digest, ...image.layers.map((l) => l.digest)].join(' ');
  const inManifest = [doc.config.digest, ...doc.layers.map((l) => l.digest)].join(' ');
  if (listed !== inManifest)
    throw new PackfarmError('PROTOCOL_ERROR', `${source}: the job lists other blobs than the manifest holds`);
  const dir = join(dataDir, 'farm', 'images', digestHex(m.digest));
  await publishDir(dir, 'farm-image', async (tmp) => {
    const blobs = join(tmp, 'blobs', 'sha256');
    await mkdir(blobs, { recursive: true });
    for (const d of [m.digest, doc.config.digest, ...doc.layers.map((l) => l.digest)] as Digest[])
      await linkOrCopy(blob(d), join(blobs, digestHex(d)));
    await writeFile(join(tmp, 'oci-layout'), `${JSON.stringify({ imageLayoutVersion: '1.0.0' })}\n`);
    const index = {
      schemaVersion: 2,
      mediaType: MediaType.ociIndex,
      manifests: [{ mediaType: m.mediaType, digest: m.digest, size: m.size }],
    };
    await writeFile(join(tmp, 'index.json'), `${JSON.stringify(index)}\n`);
  });
  return `oci:${dir}@${m.digest}`;
}

async function materializeBuilderDir(
  dataDir: string,
  digest: Digest,
  blob: (d: Digest) => string,
): Promise<string> {
  const dir = join(dataDir, 'farm', 'builders', digestHex(digest));
  await publishDir(dir, 'farm-builder', (tmp) =>
    extractLayer({ source: createReadStream(blob(digest)), dest: tmp, name: 'builder dir' }).then(() => {}),
  );
  return dir;
}

async function materializeCacheDir(
  dir: string,
  platform: Platform,
  state: DirCacheState,
  blob: (d: Digest) => string,
): Promise<void> {
  if (state.metadata === '') return; // no cache yet (or --clear-cache): the build starts empty
  parseCacheMetadata(state.metadata, 'the coordinator’s cache metadata');
  const { committed } = dirCachePaths(dir, platform);
  await mkdir(committed, { recursive: true });
  for (const l of state.layers) await linkOrCopy(blob(l.digest), join(committed, `${l.digest}.tar`));
  await writeFile(join(committed, CACHE_METADATA_LABEL), state.metadata);
}

/**
 * A dir cache's committed state for one platform and where its layer files are: the reader of what a build
 * committed (node) and of what the coordinator offers. Undefined when nothing is committed.
 */
export async function readDirCacheState(
  committed: string,
): Promise<{ state: DirCacheState; files: Map<Digest, string> } | undefined> {
  const metadata = await readFile(join(committed, CACHE_METADATA_LABEL), 'utf8').catch(() => undefined);
  if (metadata === undefined) return undefined;
  const files = new Map<Digest, string>();
  const layers: DirCacheState['layers'] = [];
  for (const name of (await readdir(committed)).sort()) {
    const d = name.endsWith('.tar') ? name.slice(0, -4) : '';
    if (!isDigest(d)) continue;
    const path = join(committed, name);
    layers.push({ digest: d, size: (await stat(path)).size });
    files.set(d, path);
  }
  return { state: { metadata, layers }, files };
}

/** After the build: the job's new cache for the platform (undefined: the build committed none). */
export function jobCacheCommitted(cacheDir: string, platform: Platform): string {
  return dirCachePaths(cacheDir, platform).committed;
}
