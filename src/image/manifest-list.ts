import { createHash } from 'node:crypto';
import { readdir, readFile, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { type Digest, isDigest } from '../oci/digest.js';
import { isImageManifestMediaType, isIndexMediaType } from '../oci/media-types.js';
import { parsePlatform } from '../oci/platform.js';
import { type ImageReference, formatReference, parseReference } from '../oci/reference.js';
import {
  DigestSchema,
  type ImageConfig,
  ImageConfigSchema,
  ImageIndexSchema,
  ImageManifestSchema,
  PlatformSchema,
  type PlatformSpec,
} from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { readFileIfExists, writeFileAtomic } from '../util/fs.js';
import { parseJson, parseWith } from '../util/validate.js';
import { type CopyEvent, type CopyReport, copyImage } from './copy.js';
import {
  type BuiltIndex,
  type IndexChild,
  type IndexFormat,
  buildIndex,
  normalizePlatformSpec,
} from './index-list.js';
import { type LayoutStore, openLayoutStore } from './layout-store.js';
import { ensureDataDir, packfarmDataDir } from './data-dir.js';
import { withFileLock } from '../util/lock.js';
import type { ImageStore } from './store.js';
import {
  type ImageLocation,
  type OpenImageOptions,
  formatImageLocation,
  openImage,
  parseImageLocation,
} from './transport.js';

/**
 * Local manifest lists (`packfarm manifest …`), kept on disk until pushed.
 *
 * Where: `$PACKFARM_HOME` when set, else `$XDG_DATA_HOME/packfarm`, else `~/.local/share/packfarm`; lists
 * live in `<that>/manifests/<name>/`, where <name> is the list's full reference URI-encoded
 * (`127.0.0.1%3A5000%2Fapp%3A1`), or `sha256-<hash of it>` when that would be too long for a file name.
 *
 * Each list directory is an OCI image layout holding the child manifests and their configs as blobs (so
 * `inspect` works offline) plus `list.json`, the list's state: its name, format, index annotations, and one
 * entry per child with its descriptor (platform, annotations) and where it came from (the store to copy its
 * blobs from at push time, and the image text it was added as). After every change the index as it would be
 * pushed is also written into the layout under the tag `index`; the layout is sparse (no layers), so tools
 * can inspect it but not copy it.
 *
 * `add` of an image manifest takes the platform from the image's config unless flags say otherwise. `add` of
 * an index adds each of its runnable children (attestation manifests and unknown/unknown entries are
 * skipped) with the platform its descriptor declares; platform flags are refused there (annotate afterwards).
 * Re-adding a digest replaces its entry.
 */

export function manifestListsDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(packfarmDataDir(env), 'manifests');
}

const ListChildSchema = z.looseObject({
  digest: DigestSchema,
  mediaType: z.string().min(1),
  size: z.number().int().nonnegative(),
  platform: PlatformSchema.optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  artifactType: z.string().optional(),
  source: z.object({
    /** A location without target (docker://host/repo or oci:/dir) to copy the child's blobs from. */
    store: z.string().min(1),
    /** The image as it was added (normalized), for `annotate`/`rm` by name. */
    image: z.string().min(1),
  }),
});
export type LocalListChild = z.infer<typeof ListChildSchema>;

const ListStateSchema = z.looseObject({
  version: z.literal(1),
  name: z.string().min(1),
  format: z.enum(['oci', 'docker']).optional(),
  annotations: z.record(z.string(), z.string()).optional(),
  children: z.array(ListChildSchema),
});
export type LocalListState = z.infer<typeof ListStateSchema>;

export interface LocalListOptions {
  /** Overrides packfarmDataDir() (tests, embedding). */
  dataDir?: string;
  env?: NodeJS.ProcessEnv;
}

export interface ImageAccessOptions extends LocalListOptions {
  insecureRegistries?: string[];
  registry?: OpenImageOptions['registry'];
}

export interface PlatformOverrides {
  os?: string;
  arch?: string;
  variant?: string;
  osVersion?: string;
  osFeatures?: string[];
}

interface ListHandle {
  name: string;
  ref: ImageReference;
  dir: string;
  stateFile: string;
}

function listHandle(name: string, opts: LocalListOptions): ListHandle {
  const ref = parseReference(name, { source: 'manifest list name' });
  if (ref.digest !== undefined)
    throw new PackfarmError('INVALID_REFERENCE', `manifest list name "${name}" must be a tag, not a digest`, {
      hint: 'name the list like the tag it will be pushed to, e.g. registry.example/app:1.0',
    });
  const full = formatReference(ref);
  const encoded = encodeURIComponent(full);
  const leaf = encoded.length <= 200 ? encoded : `sha256-${createHash('sha256').update(full).digest('hex')}`;
  const dir = join(opts.dataDir ?? manifestListsDir(opts.env), leaf);
  return { name: full, ref, dir, stateFile: join(dir, 'list.json') };
}

/** listHandle, after checking the data dir the lists live in (unless the caller names its own). */
async function openListHandle(name: string, opts: LocalListOptions): Promise<ListHandle> {
  if (opts.dataDir === undefined) await ensureDataDir(opts.env);
  return listHandle(name, opts);
}

async function readState(h: ListHandle): Promise<LocalListState | undefined> {
  const text = await readFileIfExists(h.stateFile);
  if (text === undefined) return undefined;
  return parseWith(ListStateSchema, parseJson(text, h.stateFile), h.stateFile, 'INVALID_MANIFEST_LIST');
}

async function requireState(h: ListHandle): Promise<LocalListState> {
  const state = await readState(h);
  if (!state)
    throw new PackfarmError('MANIFEST_LIST_UNKNOWN', `there is no local manifest list ${h.name}`, {
      hint: `create it with \`packfarm manifest create ${h.name}\``,
    });
  return state;
}

/** Read-modify-write of list.json under the list's lock; the index is re-rendered into the layout. */
async function updateState<T>(
  h: ListHandle,
  change: (state: LocalListState | undefined) => Promise<{ state: LocalListState | null; result: T }>,
): Promise<T> {
  // The directory is a layout first, so list.json never lands in a plain directory.
  await listLayout(h);
  return withFileLock(join(h.dir, '.packfarm-list.lock'), async () => {
    const { state, result } = await change(await readState(h));
    if (state) {
      await writeFileAtomic(h.stateFile, `${JSON.stringify(state, null, 2)}\n`);
      await renderIndex(h, state);
    }
    return result;
  });
}

async function listLayout(h: ListHandle): Promise<LayoutStore> {
  return openLayoutStore(h.dir, { create: true });
}

async function renderIndex(h: ListHandle, state: LocalListState): Promise<void> {
  const layout = await listLayout(h);
  const built = buildIndex(state.children.map(toIndexChild), {
    format: 'oci',
    ...(state.annotations ? { annotations: state.annotations } : {}),
  });
  await layout.putManifest({ bytes: built.bytes, mediaType: built.mediaType, tag: 'index' });
}

function toIndexChild(c: LocalListChild): IndexChild {
  return {
    mediaType: c.mediaType,
    digest: c.digest as Digest,
    size: c.size,
    ...(c.platform ? { platform: c.platform } : {}),
    ...(c.annotations ? { annotations: c.annotations } : {}),
    ...(c.artifactType ? { artifactType: c.artifactType } : {}),
  };
}

/** Source location without its tag/digest, so a child can be fetched from it by digest later. */
function storeLocation(loc: ImageLocation): string {
  if (loc.transport === 'oci') return formatImageLocation({ transport: 'oci', dir: loc.dir });
  return `docker://${loc.reference.registry}/${loc.reference.repository}`;
}

function withTarget(storeLoc: string, digest: Digest): string {
  return `${storeLoc}@${digest}`;
}

const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

async function readSmallBlob(store: ImageStore, digest: Digest, size: number, what: string): Promise<Buffer> {
  if (size > MAX_CONFIG_BYTES)
    throw new PackfarmError(
      'TOO_LARGE',
      `${what} ${digest} is ${size} bytes; configs are expected to be small`,
    );
  const chunks: Buffer[] = [];
  for await (const chunk of await store.getBlob(digest)) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

function platformOf(config: ImageConfig): PlatformSpec {
  return normalizePlatformSpec({
    os: config.os,
    architecture: config.architecture,
    ...(config.variant ? { variant: config.variant } : {}),
    ...(config['os.version'] ? { 'os.version': config['os.version'] } : {}),
    ...(config['os.features'] ? { 'os.features': config['os.features'] } : {}),
  });
}

function applyOverrides(
  base: PlatformSpec | undefined,
  o: PlatformOverrides,
  what: string,
): PlatformSpec | undefined {
  const any = o.os ?? o.arch ?? o.variant ?? o.osVersion ?? o.osFeatures;
  if (any === undefined) return base;
  const os = o.os ?? base?.os;
  const architecture = o.arch ?? base?.architecture;
  if (!os || !architecture)
    throw new PackfarmError('INVALID_PLATFORM', `${what} has no platform yet: give both --os and --arch`);
  // A new architecture drops the old variant unless one is given with it.
  const variant = o.variant ?? (o.arch !== undefined ? undefined : base?.variant);
  const spec: PlatformSpec = {
    ...base,
    os,
    architecture,
    ...(o.osVersion !== undefined ? { 'os.version': o.osVersion } : {}),
    ...(o.osFeatures !== undefined ? { 'os.features': o.osFeatures } : {}),
  };
  if (variant) spec.variant = variant;
  else delete spec.variant;
  // Same character rules as --platform; the error names the flags.
  parsePlatform(`${os}/${architecture}${variant ? `/${variant}` : ''}`, '--os/--arch/--variant');
  return normalizePlatformSpec(spec);
}

export interface AddImageOptions extends PlatformOverrides {
  annotations?: Record<string, string>;
}

/**
 * Resolve `image` and fetch what the list needs into the list's layout (manifest bytes, configs).
 * Returns the entries to add (one for an image, one per runnable child for an index).
 */
async function collectChildren(
  h: ListHandle,
  image: string,
  add: AddImageOptions,
  opts: ImageAccessOptions,
): Promise<LocalListChild[]> {
  const loc = parseImageLocation(image, 'image');
  const opened = await openImage(loc, {
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
  });
  const layout = await listLayout(h);
  const top = await opened.store.getManifest(opened.target);
  const source = { store: storeLocation(loc), image: formatImageLocation(loc).replace(/^docker:\/\//, '') };

  const keepManifest = async (bytes: Buffer, digest: Digest) => {
    await layout.putBlob({ digest, size: bytes.length, open: () => bufferReadable(bytes) });
  };
  const describeImage = async (bytes: Buffer, digest: Digest, what: string): Promise<PlatformSpec> => {
    const manifest = parseWith(ImageManifestSchema, parseJson(bytes.toString('utf8'), what), what);
    const cfgDigest = manifest.config.digest as Digest;
    const cfgBytes = await readSmallBlob(opened.store, cfgDigest, manifest.config.size, `${what} config`);
    await layout.putBlob({ digest: cfgDigest, size: cfgBytes.length, open: () => bufferReadable(cfgBytes) });
    await keepManifest(bytes, digest);
    const cfgSource = `${what} config ${cfgDigest}`;
    return platformOf(
      parseWith(ImageConfigSchema, parseJson(cfgBytes.toString('utf8'), cfgSource), cfgSource),
    );
  };

  if (isImageManifestMediaType(top.mediaType)) {
    const fromConfig = await describeImage(top.bytes, top.digest, opened.display);
    const platform = applyOverrides(fromConfig, add, opened.display);
    const manifest = parseWith(
      ImageManifestSchema,
      parseJson(top.bytes.toString('utf8'), opened.display),
      opened.display,
    );
    return [
      {
        digest: top.digest,
        mediaType: top.mediaType,
        size: top.bytes.length,
        ...(platform ? { platform } : {}),
        ...(add.annotations && Object.keys(add.annotations).length > 0
          ? { annotations: add.annotations }
          : {}),
        ...(manifest.artifactType ? { artifactType: manifest.artifactType } : {}),
        source,
      },
    ];
  }
  if (isIndexMediaType(top.mediaType)) {
    if (add.os ?? add.arch ?? add.variant ?? add.osVersion ?? add.osFeatures)
      throw new PackfarmError(
        'INVALID_ARGS',
        `${opened.display} is an index: platform flags apply to a single image`,
        { hint: 'add the index, then set platforms per entry with `packfarm manifest annotate LIST DIGEST`' },
      );
    const what = `${opened.display}@${top.digest}`;
    const index = parseWith(ImageIndexSchema, parseJson(top.bytes.toString('utf8'), what), what);
    const out: LocalListChild[] = [];
    for (const d of index.manifests) {
      if (d.annotations?.['vnd.docker.reference.type'] !== undefined) continue;
      if (d.platform && (d.platform.os === 'unknown' || d.platform.architecture === 'unknown')) continue;
      const child = await opened.store.getManifest(d.digest);
      if (child.digest !== d.digest)
        throw new PackfarmError(
          'MANIFEST_INVALID',
          `${what}: child ${d.digest} was served as ${child.digest}`,
        );
      let platform: PlatformSpec | undefined = d.platform ? normalizePlatformSpec(d.platform) : undefined;
      if (isImageManifestMediaType(child.mediaType)) {
        const fromConfig = await describeImage(child.bytes, child.digest, `${opened.display}@${d.digest}`);
        platform ??= fromConfig;
      } else {
        await keepManifest(child.bytes, child.digest);
      }
      const annotations = { ...d.annotations, ...add.annotations };
      out.push({
        digest: child.digest,
        mediaType: child.mediaType,
        size: child.bytes.length,
        ...(platform ? { platform } : {}),
        ...(Object.keys(annotations).length > 0 ? { annotations } : {}),
        ...(d.artifactType ? { artifactType: d.artifactType } : {}),
        source,
      });
    }
    if (out.length === 0)
      throw new PackfarmError('MANIFEST_LIST_EMPTY', `${opened.display} is an index without runnable images`);
    return out;
  }
  throw new PackfarmError(
    'UNSUPPORTED_MEDIA_TYPE',
    `${opened.display} is ${top.mediaType}, neither an image manifest nor an index`,
  );
}

function bufferReadable(bytes: Buffer): Readable {
  return Readable.from([bytes]);
}

function mergeChildren(existing: LocalListChild[], added: LocalListChild[]): LocalListChild[] {
  const byDigest = new Map(existing.map((c) => [c.digest, c]));
  for (const c of added) byDigest.set(c.digest, c);
  return [...byDigest.values()];
}

export interface ManifestListSummary {
  name: string;
  dir: string;
  format: IndexFormat;
  children: LocalListChild[];
}

function summary(h: ListHandle, state: LocalListState): ManifestListSummary {
  return { name: state.name, dir: h.dir, format: state.format ?? 'oci', children: state.children };
}

export interface CreateListOptions extends ImageAccessOptions {
  images?: string[];
  /** Add to an existing list instead of failing. */
  amend?: boolean;
  format?: IndexFormat;
  /** Index-level annotations. */
  annotations?: Record<string, string>;
}

export async function createManifestList(
  name: string,
  opts: CreateListOptions = {},
): Promise<ManifestListSummary> {
  const h = await openListHandle(name, opts);
  if (!opts.amend && (await readState(h)))
    throw new PackfarmError('MANIFEST_LIST_EXISTS', `a local manifest list ${h.name} already exists`, {
      hint: 'use --amend to add to it, or `packfarm manifest remove` it first',
    });
  const added: LocalListChild[] = [];
  for (const image of opts.images ?? []) added.push(...(await collectChildren(h, image, {}, opts)));
  return updateState(h, async (current) => {
    if (current && !opts.amend)
      throw new PackfarmError('MANIFEST_LIST_EXISTS', `a local manifest list ${h.name} already exists`, {
        hint: 'use --amend to add to it',
      });
    const annotations = { ...current?.annotations, ...opts.annotations };
    const state: LocalListState = {
      version: 1,
      name: h.name,
      ...((opts.format ?? current?.format) ? { format: opts.format ?? current?.format } : {}),
      ...(Object.keys(annotations).length > 0 ? { annotations } : {}),
      children: mergeChildren(current?.children ?? [], added),
    };
    return { state, result: summary(h, state) };
  });
}

export async function addToManifestList(
  name: string,
  image: string,
  opts: ImageAccessOptions & AddImageOptions = {},
): Promise<{ list: ManifestListSummary; added: LocalListChild[] }> {
  const h = await openListHandle(name, opts);
  await requireState(h);
  const added = await collectChildren(h, image, opts, opts);
  return updateState(h, async (current) => {
    const base = current ?? (await requireState(h));
    const state = { ...base, children: mergeChildren(base.children, added) };
    return { state, result: { list: summary(h, state), added } };
  });
}

/** Children matching `image`: a digest, a reference with @digest, or the image text they were added as. */
function matchChildren(state: LocalListState, image: string): LocalListChild[] {
  if (isDigest(image)) return state.children.filter((c) => c.digest === image);
  let wanted: string;
  let digest: string | undefined;
  try {
    const loc = parseImageLocation(image, 'image');
    if (loc.transport === 'docker') digest = loc.reference.digest;
    else digest = loc.digest;
    wanted = formatImageLocation(loc).replace(/^docker:\/\//, '');
  } catch {
    return [];
  }
  if (digest !== undefined) return state.children.filter((c) => c.digest === digest);
  return state.children.filter((c) => c.source.image === wanted);
}

function selectOne(state: LocalListState, image: string): LocalListChild {
  const hits = matchChildren(state, image);
  if (hits.length === 0)
    throw new PackfarmError('MANIFEST_LIST_ENTRY_UNKNOWN', `${state.name} has no entry for ${image}`, {
      hint: `entries: ${state.children.map((c) => `${c.source.image} (${c.digest})`).join(', ') || 'none'}`,
    });
  if (hits.length > 1)
    throw new PackfarmError(
      'MANIFEST_LIST_ENTRY_AMBIGUOUS',
      `${image} matches ${hits.length} entries of ${state.name}; name one by digest`,
      { hint: `digests: ${hits.map((c) => c.digest).join(', ')}` },
    );
  return hits[0]!;
}

export interface AnnotateOptions extends LocalListOptions, PlatformOverrides {
  annotations?: Record<string, string>;
}

export async function annotateManifestList(
  name: string,
  image: string,
  opts: AnnotateOptions = {},
): Promise<{ list: ManifestListSummary; entry: LocalListChild }> {
  const h = await openListHandle(name, opts);
  return updateState(h, async (current) => {
    const state = current ?? (await requireState(h));
    const hit = selectOne(state, image);
    const platform = applyOverrides(hit.platform, opts, `${image} in ${state.name}`);
    const annotations = { ...hit.annotations, ...opts.annotations };
    const entry: LocalListChild = {
      ...hit,
      ...(platform ? { platform } : {}),
      ...(Object.keys(annotations).length > 0 ? { annotations } : {}),
    };
    const next = { ...state, children: state.children.map((c) => (c.digest === hit.digest ? entry : c)) };
    return { state: next, result: { list: summary(h, next), entry } };
  });
}

export async function removeFromManifestList(
  name: string,
  image: string,
  opts: LocalListOptions = {},
): Promise<{ list: ManifestListSummary; removed: LocalListChild[] }> {
  const h = await openListHandle(name, opts);
  return updateState(h, async (current) => {
    const state = current ?? (await requireState(h));
    const removed = matchChildren(state, image);
    if (removed.length === 0) selectOne(state, image);
    const gone = new Set(removed.map((c) => c.digest));
    const next = { ...state, children: state.children.filter((c) => !gone.has(c.digest)) };
    return { state: next, result: { list: summary(h, next), removed } };
  });
}

/** Delete a local list (its directory). */
export async function deleteManifestList(
  name: string,
  opts: LocalListOptions = {},
): Promise<{ name: string; dir: string }> {
  const h = await openListHandle(name, opts);
  await requireState(h);
  await rm(h.dir, { recursive: true, force: true });
  return { name: h.name, dir: h.dir };
}

export async function getManifestList(
  name: string,
  opts: LocalListOptions = {},
): Promise<ManifestListSummary> {
  const h = await openListHandle(name, opts);
  return summary(h, await requireState(h));
}

/** The index exactly as `push` would write it. */
export async function inspectManifestList(
  name: string,
  opts: LocalListOptions & { format?: IndexFormat } = {},
): Promise<BuiltIndex & { list: ManifestListSummary }> {
  const h = await openListHandle(name, opts);
  const state = await requireState(h);
  return { ...renderFor(state, opts.format), list: summary(h, state) };
}

function renderFor(state: LocalListState, format?: IndexFormat): BuiltIndex {
  return buildIndex(state.children.map(toIndexChild), {
    format: format ?? state.format ?? 'oci',
    ...(state.annotations ? { annotations: state.annotations } : {}),
  });
}

/** Names of every local list. */
export async function listManifestLists(opts: LocalListOptions = {}): Promise<string[]> {
  if (opts.dataDir === undefined) await ensureDataDir(opts.env);
  const root = opts.dataDir ?? manifestListsDir(opts.env);
  let names: string[];
  try {
    names = await readdir(root);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return [];
    throw err;
  }
  const out: string[] = [];
  for (const n of names) {
    const file = join(root, n, 'list.json');
    try {
      if (!(await stat(file)).isFile()) continue;
    } catch {
      continue;
    }
    const state = parseWith(
      ListStateSchema,
      parseJson(await readFile(file, 'utf8'), file),
      file,
      'INVALID_MANIFEST_LIST',
    );
    out.push(state.name);
  }
  return out.sort();
}

export interface PushListOptions extends ImageAccessOptions {
  /** Where to push (any image location); default: the list's own name. */
  destination?: string;
  format?: IndexFormat;
  /** Delete the local list after a successful push. */
  purge?: boolean;
  concurrency?: number;
  onProgress?: (event: CopyEvent & { child?: Digest }) => void;
  /**
   * Stops the push (SIGINT/SIGTERM in the CLI): transfers in flight are cut, open upload sessions deleted,
   * and the index is not written, so the destination tag is left as it was.
   */
  signal?: AbortSignal;
}

export interface PushListReport {
  /** Where the index was written. */
  destination: string;
  digest: Digest;
  mediaType: string;
  size: number;
  tag: string;
  children: Array<{ digest: Digest; platform?: string; report: CopyReport }>;
  warnings: string[];
  purged: boolean;
}

/**
 * Push a local list: copy every child image into the destination repository (mounting blobs when source and
 * destination share a registry), children by digest, then the index under the destination's tag.
 */
export async function pushManifestList(name: string, opts: PushListOptions = {}): Promise<PushListReport> {
  const h = await openListHandle(name, opts);
  const state = await requireState(h);
  if (state.children.length === 0)
    throw new PackfarmError('MANIFEST_LIST_EMPTY', `${state.name} has no images to push`, {
      hint: `add some with \`packfarm manifest add ${state.name} IMAGE\``,
    });
  const built = renderFor(state, opts.format);
  const access = {
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    ...(opts.registry || opts.signal
      ? { registry: { ...opts.registry, ...(opts.signal ? { signal: opts.signal } : {}) } }
      : {}),
  };
  const destText = opts.destination ?? state.name;
  const dest = await openImage(destText, { ...access, create: true });
  if (dest.tag === undefined)
    throw new PackfarmError(
      'INVALID_REFERENCE',
      `push destination ${dest.display} must name a tag, not a digest`,
    );

  const children: PushListReport['children'] = [];
  // Children one after another: each copy is already concurrent inside, and sequential pushes keep the
  // registry load bounded and the progress readable.
  for (const child of state.children) {
    const src = await openImage(withTarget(child.source.store, child.digest as Digest), access);
    const report = await copyImage({
      src: src.store,
      srcTarget: child.digest,
      dst: dest.store,
      all: true,
      ...(opts.concurrency ? { concurrency: opts.concurrency } : {}),
      ...(opts.signal ? { signal: opts.signal } : {}),
      ...(opts.onProgress
        ? { onProgress: (e) => opts.onProgress?.({ ...e, child: child.digest as Digest }) }
        : {}),
    });
    children.push({
      digest: child.digest as Digest,
      ...(child.platform ? { platform: formatPlatformSpec(child.platform) } : {}),
      report,
    });
  }
  opts.signal?.throwIfAborted();
  await dest.store.putManifest({ bytes: built.bytes, mediaType: built.mediaType, tag: dest.tag });
  let purged = false;
  if (opts.purge) {
    await rm(h.dir, { recursive: true, force: true });
    purged = true;
  }
  return {
    destination: dest.display,
    digest: built.digest,
    mediaType: built.mediaType,
    size: built.size,
    tag: dest.tag,
    children,
    warnings: built.warnings,
    purged,
  };
}

function formatPlatformSpec(p: PlatformSpec): string {
  const n = normalizePlatformSpec(p);
  return `${n.os}/${n.architecture}${n.variant ? `/${n.variant}` : ''}${n['os.version'] ? `@${n['os.version']}` : ''}`;
}
