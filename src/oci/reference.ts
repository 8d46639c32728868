import { PackfarmError } from '../util/errors.js';
import { type Digest, isDigest } from './digest.js';

/** A registry image reference, normalized the way docker does it. */
export interface ImageReference {
  /** Registry host[:port] as written (docker.io for Docker Hub). */
  registry: string;
  /** Repository path, e.g. library/ubuntu. */
  repository: string;
  tag?: string;
  digest?: Digest;
}

export const DOCKER_HUB = 'docker.io';
/** The API host behind docker.io. */
export const DOCKER_HUB_API = 'registry-1.docker.io';

// Path components: lower-case alphanumerics separated by '.', '_', '__' or one or more '-'.
const COMPONENT_RE = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG_RE = /^[\w][\w.-]{0,127}$/;
// A domain component, optionally with a port; also IPv6 in brackets.
const DOMAIN_RE =
  /^(?:\[[a-fA-F0-9:]+\]|[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?(?:\.[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?)*)(?::[0-9]+)?$/;

function invalid(text: string, why: string, source?: string): PackfarmError {
  return new PackfarmError(
    'INVALID_REFERENCE',
    `${source ? `${source}: ` : ''}"${text}" is not a valid image reference: ${why}`,
    {
      hint: 'expected [registry[:port]/]repository[:tag][@sha256:<hex>], e.g. registry.example:5000/team/app:1.0',
    },
  );
}

/**
 * Parse an image reference with docker normalization: `ubuntu` → docker.io/library/ubuntu:latest;
 * the first component is a registry when it has a '.' or ':' or is `localhost`.
 * `defaultTag` (default "latest") is applied only when neither tag nor digest is given.
 */
export function parseReference(
  text: string,
  opts: { defaultTag?: string | false; source?: string } = {},
): ImageReference {
  const src = opts.source;
  if (text.length === 0) throw invalid(text, 'it is empty', src);
  if (text.length > 4096) throw invalid(text.slice(0, 40), 'it is too long', src);
  let rest = text;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    const d = rest.slice(at + 1);
    if (!isDigest(d)) throw invalid(text, `"${d}" is not a sha256 digest`, src);
    digest = d;
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf('/');
  const colon = rest.lastIndexOf(':');
  if (colon > lastSlash) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG_RE.test(tag)) throw invalid(text, `"${tag}" is not a valid tag`, src);
  }
  const parts = rest.split('/');
  let registry = DOCKER_HUB;
  const first = parts[0] ?? '';
  if (
    parts.length > 1 &&
    (first.includes('.') || first.includes(':') || first === 'localhost' || first.startsWith('['))
  ) {
    if (!DOMAIN_RE.test(first)) throw invalid(text, `"${first}" is not a valid registry host`, src);
    registry = first;
    parts.shift();
  }
  if (parts.length === 0 || parts.some((p) => p === ''))
    throw invalid(text, 'the repository path is empty', src);
  for (const p of parts) {
    if (!COMPONENT_RE.test(p)) {
      throw invalid(
        text,
        `path component "${p}" must be lower-case letters, digits and separators (. _ __ -)`,
        src,
      );
    }
  }
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = DOCKER_HUB;
  if (registry === DOCKER_HUB && parts.length === 1) parts.unshift('library');
  const repository = parts.join('/');
  if (repository.length > 255) throw invalid(text, 'the repository name is longer than 255 characters', src);
  const ref: ImageReference = { registry, repository };
  if (tag !== undefined) ref.tag = tag;
  if (digest !== undefined) ref.digest = digest;
  if (tag === undefined && digest === undefined && opts.defaultTag !== false)
    ref.tag = opts.defaultTag ?? 'latest';
  return ref;
}

/** Full form: registry/repository[:tag][@digest]. */
export function formatReference(ref: ImageReference): string {
  return `${ref.registry}/${ref.repository}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** Short, familiar form (drops docker.io/library/ as docker does). */
export function familiarReference(ref: ImageReference): string {
  let name = `${ref.registry}/${ref.repository}`;
  if (ref.registry === DOCKER_HUB)
    name = ref.repository.startsWith('library/') ? ref.repository.slice(8) : ref.repository;
  return `${name}${ref.tag !== undefined ? `:${ref.tag}` : ''}${ref.digest ? `@${ref.digest}` : ''}`;
}

/** The same repository, pointing at a digest (tag dropped). */
export function withDigest(ref: ImageReference, digest: Digest): ImageReference {
  return { registry: ref.registry, repository: ref.repository, digest };
}

/** The same repository with another tag (digest dropped). */
export function withTag(ref: ImageReference, tag: string): ImageReference {
  if (!TAG_RE.test(tag)) throw invalid(tag, `"${tag}" is not a valid tag`);
  return { registry: ref.registry, repository: ref.repository, tag };
}

/** The tag or digest to ask a registry for: digest wins when both are set. */
export function referenceTarget(ref: ImageReference): string {
  const t = ref.digest ?? ref.tag;
  if (t === undefined) throw new Error(`reference ${formatReference(ref)} has neither tag nor digest`);
  return t;
}

/** The host to talk HTTP to for a registry name (docker.io is served by registry-1.docker.io). */
export function registryApiHost(registry: string): string {
  return registry === DOCKER_HUB ? DOCKER_HUB_API : registry;
}

export function isValidTag(tag: string): boolean {
  return TAG_RE.test(tag);
}
