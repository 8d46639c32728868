import { lstat, mkdir, readdir, rename, rm } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { extractLayer } from '../archive/extract.js';
import { type BaseImage, readBaseImage } from '../image/read.js';
import type { ImageStore } from '../image/store.js';
import {
  type OpenImageOptions,
  appImageLocation,
  displayImageLocation,
  openImage,
} from '../image/transport.js';
import type { Digest } from '../oci/digest.js';
import { type Platform, formatPlatform } from '../oci/platform.js';
import { Label, LifecycleMetadataSchema } from '../platform/labels.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { makeTempDir } from '../util/tempdir.js';
import { readJsonLabel } from './inspect.js';

export interface DownloadSbomOptions {
  store: ImageStore;
  /** Tag or digest in `store`: an app image or an index of them. */
  target: string;
  /** For an index: the child to read (default: the host's platform). For an image: it must be this. */
  platform?: Platform;
  /** Where the layer's files go, under their in-image paths (`<dir>/layers/sbom/launch/…`). */
  destDir: string;
  /** Names the image in messages (default: store description and target). */
  name?: string;
  signal?: AbortSignal;
}

export interface DownloadSbomResult {
  /** The image manifest the SBOM came from (the chosen child for an index). */
  digest: Digest;
  platform: string;
  /** diffID (as recorded in the label) and blob digest of the SBOM layer. */
  diffId: Digest;
  layerDigest: Digest;
  destDir: string;
  /** Regular files written, relative to destDir, sorted. */
  files: string[];
}

/**
 * `packfarm sbom download`: the launch SBOM layer that the exporter recorded in `io.buildpacks.lifecycle.metadata`
 * (`sbom.sha`, its diffID), unpacked into `destDir` with the paths it has in the image, as pack does (so files
 * land in `<destDir>/layers/sbom/launch/<buildpack>/…`). Only that layer's blob is read.
 *
 * The layer is someone else's tar written into a directory the user chose, so beyond the extractor's guards
 * (no `..`, no writing through symlinks, no devices) every entry must lie under `<layers dir>/sbom/`, and
 * whiteouts are refused: they would delete the user's files.
 */
export async function downloadSbom(opts: DownloadSbomOptions): Promise<DownloadSbomResult> {
  const name = opts.name ?? `${opts.store.description}:${opts.target}`;
  const base = await readAppImageFor(opts.store, opts.target, opts.platform, name);
  const source = `${name}@${base.digest}`;
  const labels = base.config.config?.Labels ?? {};
  const metadata = readJsonLabel(labels, Label.lifecycleMetadata, LifecycleMetadataSchema, source);
  if (!metadata)
    throw new PackfarmError(
      'SBOM_NOT_FOUND',
      `${source} has no ${Label.lifecycleMetadata} label: it is not a CNB app image, so it has no SBOM layer`,
      { hint: 'build the image with packfarm build, pack or a CNB lifecycle' },
    );
  const diffId = metadata.sbom?.sha;
  if (!diffId)
    throw new PackfarmError(
      'SBOM_NOT_FOUND',
      `${source} has no SBOM: label ${Label.lifecycleMetadata} records no "sbom" layer`,
      {
        hint: 'the buildpacks wrote no launch SBOM files (<layers>/<buildpack>/<layer>.sbom.<ext> or launch.sbom.<ext>)',
      },
    );
  const at = base.config.rootfs.diff_ids.indexOf(diffId as Digest);
  const layer = at >= 0 ? base.manifest.layers[at] : undefined;
  if (!layer)
    throw new PackfarmError(
      'SBOM_LAYER_MISSING',
      `${source}: the SBOM layer ${diffId} named in label ${Label.lifecycleMetadata} is not among the image's layers`,
      { hint: 'the label does not match the image (was it edited?); rebuild the image' },
    );

  const layersDir = layersDirOf(base);
  const allowed = `${layersDir}/sbom`;
  const parents = new Set(
    allowed
      .split('/')
      .map((_, i, parts) => parts.slice(0, i + 1).join('/'))
      .filter((p) => p !== ''),
  );
  const files: string[] = [];
  const destDir = resolvePath(opts.destDir);
  const layerDigest = layer.digest as Digest;
  const layerName = `${source} SBOM layer ${layerDigest}`;
  // Unpacked beside the files it replaces, then moved into place only once the whole layer was read and
  // verified: a download that fails midway (connection closed, bad digest) leaves the old files as they were.
  await mkdir(destDir, { recursive: true });
  const staging = await makeTempDir(destDir, 'sbom');
  try {
    await extractInto(staging);
    await moveTreeInto(staging, destDir, layerName);
    return {
      digest: base.digest,
      platform: formatPlatform(base.platform),
      diffId: diffId as Digest,
      layerDigest,
      destDir,
      files: files.sort(),
    };
  } finally {
    await rm(staging, { recursive: true, force: true });
  }

  async function extractInto(dest: string) {
    const result = await extractLayer({
      source: await opts.store.getBlob(layerDigest),
      dest,
      name: layerName,
      ...(opts.signal ? { signal: opts.signal } : {}),
      onEntry: (entry) => {
        // Called before the entry touches the disk: throwing here refuses it.
        if (entry.type === 'whiteout' || entry.type === 'opaque')
          throw new PackfarmError('UNSAFE_LAYER_ENTRY', `${layerName}: whiteout "${entry.path}" refused`, {
            hint: 'an SBOM layer only adds files; this one would delete files in the output directory',
          });
        const inside =
          entry.path.startsWith(`${allowed}/`) || (entry.type === 'dir' && parents.has(entry.path));
        if (!inside)
          throw new PackfarmError(
            'UNSAFE_LAYER_ENTRY',
            `${layerName}: entry "${entry.path}" is outside ${allowed}/`,
            {
              hint: 'an SBOM layer only holds <layers>/sbom/…; this image was not written by a CNB exporter',
            },
          );
        if (entry.type === 'file' || entry.type === 'link') files.push(entry.path);
      },
    });
    if (result.diffId !== diffId)
      throw new PackfarmError(
        'BLOB_INVALID',
        `${layerName}: its content has diffID ${result.diffId}, the label records ${diffId}`,
        { hint: 'the image is inconsistent; nothing was written to the output directory' },
      );
    return result;
  }
}

/**
 * Move what `from` holds into `to`, merging into directories that exist: each file replaces its namesake
 * atomically (rename). Like the extractor, nothing is written through a symlink: a path component in `to`
 * that is not a real directory where the layer has one is refused.
 */
async function moveTreeInto(from: string, to: string, layerName: string): Promise<void> {
  for (const entry of await readdir(from, { withFileTypes: true })) {
    const src = join(from, entry.name);
    const dst = join(to, entry.name);
    const existing = await lstat(dst).catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    });
    if (entry.isDirectory() && existing?.isDirectory()) await moveTreeInto(src, dst, layerName);
    else if (existing?.isDirectory() || (entry.isDirectory() && existing))
      throw new PackfarmError(
        'UNSAFE_LAYER_ENTRY',
        `${layerName}: ${dst} exists and is ${existing.isDirectory() ? 'a directory' : 'not a directory'}; the SBOM layer has ${entry.isDirectory() ? 'a directory' : 'a file'} there`,
        { hint: 'download into an empty directory, or remove what is in the way' },
      );
    else await rename(src, dst);
  }
}

/** The in-image layers dir without the leading '/', from the image's CNB_LAYERS_DIR (default `layers`). */
function layersDirOf(base: BaseImage): string {
  const env = base.config.config?.Env ?? [];
  const value = env.find((e) => e.startsWith('CNB_LAYERS_DIR='))?.slice('CNB_LAYERS_DIR='.length);
  const dir = (value ?? '/layers').replace(/^\/+|\/+$/g, '');
  return dir === '' || dir.split('/').includes('..') ? 'layers' : dir;
}

/** The image `target` names, or for an index the child for `platform` (default: the host's). */
async function readAppImageFor(
  store: ImageStore,
  target: string,
  platform: Platform | undefined,
  name: string,
): Promise<BaseImage> {
  return readBaseImage(store, target, platform, {
    name,
    hint: 'choose one with --platform os/arch[/variant]',
  });
}

export interface DownloadAppSbomOptions extends OpenImageOptions {
  /** Read the registry instead of the default local layout (a bare IMAGE only; oci: is read where it says). */
  remote?: boolean;
  platform?: Platform;
  destDir: string;
  env?: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

/**
 * `sbom download IMAGE` as the CLI names it: a bare reference reads the default local layout, or the
 * registry with `remote`; `oci:DIR[:TAG]` reads that layout.
 */
export async function downloadAppSbom(
  text: string,
  opts: DownloadAppSbomOptions,
): Promise<DownloadSbomResult & { image: string }> {
  const loc = appImageLocation(text, {
    publish: opts.remote === true,
    ...(opts.env ? { env: opts.env } : {}),
  });
  const display = displayImageLocation(loc);
  const notFound = (err: unknown) =>
    new PackfarmError('IMAGE_NOT_FOUND', `image ${text} not found at ${display}`, {
      hint:
        loc.transport === 'oci' && !text.startsWith('oci:')
          ? `if the image is in a registry, add --remote (packfarm sbom download --remote ${text})`
          : 'check the name, tag or digest',
      cause: err,
    });
  let opened: Awaited<ReturnType<typeof openImage>>;
  try {
    opened = await openImage(loc, opts);
  } catch (err) {
    if (isPackfarmError(err, 'LAYOUT_NOT_FOUND')) throw notFound(err);
    throw err;
  }
  // Absence is told apart from other failures up front, so the hint about --remote is only given for it.
  let found: Awaited<ReturnType<ImageStore['resolve']>>;
  try {
    found = await opened.store.resolve(opened.target);
  } catch (err) {
    if (isPackfarmError(err, 'NAME_UNKNOWN') || isPackfarmError(err, 'MANIFEST_UNKNOWN')) throw notFound(err);
    throw err;
  }
  if (!found) throw notFound(undefined);
  const result = await downloadSbom({
    store: opened.store,
    target: found.digest,
    destDir: opts.destDir,
    name: display,
    ...(opts.platform ? { platform: opts.platform } : {}),
    ...(opts.signal ? { signal: opts.signal } : {}),
  });
  return { image: display, ...result };
}
