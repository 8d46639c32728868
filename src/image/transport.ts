import { isAbsolute, join, resolve as resolvePath } from 'node:path';
import { type Digest, isDigest } from '../oci/digest.js';
import { type ImageReference, familiarReference, formatReference, parseReference } from '../oci/reference.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { localImagesDir } from './data-dir.js';
import { isValidRefName, openLayoutStore } from './layout-store.js';
import type { RegistryOptions } from './registry-store.js';
import type { ImageStore } from './store.js';

/**
 * Where an image lives, as written on the command line:
 *
 *   oci:DIR[:TAG]          an OCI image layout directory, TAG defaulting to "latest"
 *   oci:DIR@sha256:HEX     an image in a layout by digest
 *   docker://REF           a registry reference
 *   REF                    the same, without the prefix
 *
 * Splitting DIR from TAG: the text after the LAST ':' is the tag when it contains no '/' (tags never do);
 * otherwise the whole text is the directory. For any DIR without ':' this is what skopeo does; skopeo splits
 * at the first ':', so a DIR that itself contains ':' works with packfarm as long as a tag is given
 * (`oci:/data/a:b:latest` is DIR /data/a:b, tag latest) but not with skopeo.
 *
 * A source layout given without a tag resolves to "latest", or, when there is no such tag and index.json
 * lists exactly one image, to that image (as skopeo does for `oci:DIR`).
 */
export type ImageLocation =
  | { transport: 'oci'; dir: string; tag?: string; digest?: Digest }
  | { transport: 'docker'; reference: ImageReference };

export function parseImageLocation(text: string, source = 'image'): ImageLocation {
  if (text.startsWith('oci:')) return parseLayoutLocation(text.slice(4), text, source);
  if (text.startsWith('oci-archive:') || text.startsWith('docker-archive:') || text.startsWith('dir:'))
    throw new PackfarmError(
      'UNSUPPORTED_TRANSPORT',
      `${source}: "${text}": only oci: and docker:// are supported`,
      {
        hint: 'convert with skopeo first, e.g. skopeo copy oci-archive:x.tar oci:dir:tag',
      },
    );
  const rest = text.startsWith('docker://') ? text.slice('docker://'.length) : text;
  return { transport: 'docker', reference: parseReference(rest, { source }) };
}

function parseLayoutLocation(spec: string, text: string, source: string): ImageLocation {
  const bad = (why: string) =>
    new PackfarmError('INVALID_LOCATION', `${source}: "${text}" is not a valid oci: location: ${why}`, {
      hint: 'expected oci:DIR[:TAG] or oci:DIR@sha256:<hex>',
    });
  const at = spec.lastIndexOf('@');
  if (at > 0 && isDigest(spec.slice(at + 1))) {
    return { transport: 'oci', dir: checkDir(spec.slice(0, at), bad), digest: spec.slice(at + 1) as Digest };
  }
  const colon = spec.lastIndexOf(':');
  if (colon >= 0 && !spec.slice(colon + 1).includes('/')) {
    const tag = spec.slice(colon + 1);
    if (!isValidRefName(tag)) throw bad(`"${tag}" is not a valid tag`);
    return { transport: 'oci', dir: checkDir(spec.slice(0, colon), bad), tag };
  }
  return { transport: 'oci', dir: checkDir(spec, bad) };
}

function checkDir(dir: string, bad: (why: string) => PackfarmError): string {
  if (dir === '') throw bad('the directory is empty');
  return isAbsolute(dir) ? dir : resolvePath(dir);
}

/** The location in canonical text form (absolute dir, full reference). */
export function formatImageLocation(loc: ImageLocation): string {
  if (loc.transport === 'docker') return `docker://${formatReference(loc.reference)}`;
  if (loc.digest) return `oci:${loc.dir}@${loc.digest}`;
  return loc.tag !== undefined ? `oci:${loc.dir}:${loc.tag}` : `oci:${loc.dir}`;
}

/** Short form for messages. */
export function displayImageLocation(loc: ImageLocation): string {
  if (loc.transport === 'docker') return familiarReference(loc.reference);
  return formatImageLocation(loc);
}

export interface OpenImageOptions {
  /** Registries reached over plain HTTP / unverified TLS (host[:port]). */
  insecureRegistries?: string[];
  /** Further registry client options (auth, retries …); insecureRegistries above is merged in. */
  registry?: Partial<RegistryOptions>;
  /** A destination: create a missing layout, and default its tag to "latest" without looking. */
  create?: boolean;
}

export interface OpenedImage {
  store: ImageStore;
  /** Tag or digest inside the store. */
  target: string;
  /** The tag to write when this is a destination (undefined for a digest location). */
  tag?: string;
  display: string;
  location: ImageLocation;
}

export async function openImage(
  location: string | ImageLocation,
  opts: OpenImageOptions = {},
): Promise<OpenedImage> {
  const loc = typeof location === 'string' ? parseImageLocation(location) : location;
  const display = displayImageLocation(loc);
  if (loc.transport === 'docker') {
    // Loaded on first use: layout-only commands never load the registry client.
    const { createRegistryStore } = await import('./registry-store.js');
    const store = createRegistryStore(
      { registry: loc.reference.registry, repository: loc.reference.repository },
      registryOptions(opts),
    );
    const target = loc.reference.digest ?? loc.reference.tag ?? 'latest';
    return {
      store,
      target,
      ...(loc.reference.tag !== undefined && loc.reference.digest === undefined
        ? { tag: loc.reference.tag }
        : {}),
      display,
      location: loc,
    };
  }
  const store = await openLayoutStore(loc.dir, { create: opts.create ?? false });
  if (loc.digest) return { store, target: loc.digest, display, location: loc };
  if (loc.tag !== undefined || opts.create) {
    const tag = loc.tag ?? 'latest';
    return { store, target: tag, tag, display, location: loc };
  }
  const entries = await store.entries();
  const hasLatest = (await store.listTags()).includes('latest');
  const only = entries.length === 1 ? entries[0] : undefined;
  const target = hasLatest || !only ? 'latest' : (only.digest as string);
  return { store, target, display, location: loc };
}

/**
 * The result of opening an image that may not exist yet (a previous app image): undefined when its OCI layout
 * does not exist. Any other failure (a mistyped name, an unreadable layout) is reported, never taken as "no
 * previous image"; a registry image is only contacted when read, where a missing manifest counts as absent.
 */
export async function ifImageExists(opening: Promise<OpenedImage>): Promise<OpenedImage | undefined> {
  try {
    return await opening;
  } catch (err) {
    if (isPackfarmError(err, 'LAYOUT_NOT_FOUND')) return undefined;
    throw err;
  }
}

export function registryOptions(opts: OpenImageOptions): RegistryOptions {
  const insecure = [...(opts.registry?.insecureRegistries ?? []), ...(opts.insecureRegistries ?? [])];
  return { ...opts.registry, insecureRegistries: [...new Set(insecure)] };
}

/**
 * Insecure registries from flags plus CNB_INSECURE_REGISTRIES (comma- or space-separated, as the CNB
 * platform spec's variable), deduplicated.
 */
export function insecureRegistriesFrom(
  flags: readonly string[] = [],
  env: NodeJS.ProcessEnv = process.env,
): string[] {
  const fromEnv = (env.CNB_INSECURE_REGISTRIES ?? '').split(/[\s,]+/).filter((s) => s !== '');
  return [...new Set([...flags, ...fromEnv])];
}

/**
 * The directory name of a registry in the default local layout. skopeo's and podman's `oci:` transport splits
 * `oci:DIR:TAG` at the FIRST ':', so a directory named `localhost:5000` could not be opened as printed. Every
 * ':' (the port separator, and those of an IPv6 address) becomes '_', which no registry host name contains
 * (the reference grammar allows only letters, digits, '.' and '-'), so the mapping stays one to one:
 * `localhost:5000` → `localhost_5000`, `[::1]:5000` → `[__1]_5000`.
 */
export function localRegistryDirName(registry: string): string {
  return registry.replaceAll(':', '_');
}

/**
 * Where an app image is read or written when the user gives IMAGE to build, rebase or inspect:
 * `oci:…` as written; a registry reference with `publish` (or `remote`) the registry; a bare reference without
 * it the documented default local layout `<data dir>/images/<registry>/<repository>` holding the tag (or digest), the registry's ':' written as '_'.
 * This is packfarm's stand-in for pack's daemon: images stay on disk, readable by skopeo, podman and umoci.
 */
export function appImageLocation(
  text: string,
  opts: { publish: boolean; env?: NodeJS.ProcessEnv; source?: string },
): ImageLocation {
  const loc = parseImageLocation(text, opts.source ?? 'image');
  if (loc.transport === 'oci' || opts.publish) return loc;
  const ref = loc.reference;
  const dir = join(localImagesDir(opts.env), localRegistryDirName(ref.registry), ref.repository);
  if (ref.digest) return { transport: 'oci', dir, digest: ref.digest };
  return { transport: 'oci', dir, tag: ref.tag ?? 'latest' };
}

/**
 * When `text` names a Docker Hub image only because it has no registry host (`localhost5077/app`,
 * `myregistry/app`), a sentence saying so; undefined otherwise. Docker's rule: the first path component is a
 * registry host only when it contains '.' or ':' or is `localhost`.
 */
export function dockerHubNote(text: string): string | undefined {
  if (text.startsWith('oci:')) return undefined;
  const bare = text.startsWith('docker://') ? text.slice('docker://'.length) : text;
  let ref: ImageReference;
  try {
    ref = parseReference(bare);
  } catch {
    return undefined;
  }
  if (ref.registry !== 'docker.io' || /^(docker\.io|index\.docker\.io|registry-1\.docker\.io)\//.test(bare))
    return undefined;
  return `"${bare}" was read as ${formatReference(ref)} (Docker Hub): a first part without "." or ":" (other than localhost) is not a registry host`;
}

const contextual = new WeakSet<Error>();

/**
 * The error with the image it is about in front (`run image REF: …`), plus the Docker Hub note when the name
 * was normalized to docker.io. Applied once: an error already naming its image is returned as it is.
 */
export function aboutImage(err: unknown, what: string, text: string): unknown {
  if (!(err instanceof PackfarmError) || contextual.has(err)) return err;
  const note = dockerHubNote(text);
  // A message that already names the image keeps its words; only the Docker Hub note is added.
  const named = err.message.includes(text) ? err.message : `${what} ${text}: ${err.message}`;
  const out = new PackfarmError(err.code, `${named}${note ? ` (${note})` : ''}`, {
    ...(err.hint ? { hint: err.hint } : {}),
    exitCode: err.exitCode,
    cause: err,
  });
  contextual.add(out);
  return out;
}

/** `store` whose failures name the image (aboutImage): for the run, previous and cache images of a build. */
export function storeAbout<T extends ImageStore>(store: T, what: string, text: string): T {
  return new Proxy(store, {
    get(target, prop, receiver) {
      const v = Reflect.get(target, prop, receiver);
      if (typeof v !== 'function') return v;
      return (...args: unknown[]) => {
        let r: unknown;
        try {
          r = v.apply(target, args);
        } catch (err) {
          throw aboutImage(err, what, text);
        }
        return r instanceof Promise
          ? r.catch((err: unknown) => {
              throw aboutImage(err, what, text);
            })
          : r;
      };
    },
  });
}
