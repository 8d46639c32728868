import type { Digest } from '../oci/digest.js';
import { parseReference } from '../oci/reference.js';
import type { ImageStore } from './store.js';

/**
 * Names of images as labels and reports record them: registry references (`docker://` accepted) and OCI
 * layout locations (`oci:DIR[:TAG|@DIGEST]`). One place, so export, rebase and analyze write the same names.
 */

/** `registry/repository` of a reference, `oci:DIR` of a layout location; undefined when unparseable. */
export function repositoryKey(name: string): string | undefined {
  if (name.startsWith('oci:')) {
    const rest = name.slice(4);
    const at = rest.indexOf('@');
    const body = at >= 0 ? rest.slice(0, at) : rest;
    const colon = body.lastIndexOf(':');
    return `oci:${colon >= 0 && !body.slice(colon + 1).includes('/') ? body.slice(0, colon) : body}`;
  }
  try {
    const r = parseReference(name.startsWith('docker://') ? name.slice(9) : name);
    return `${r.registry}/${r.repository}`;
  } catch {
    return undefined;
  }
}

/**
 * `registry/repository@digest` for a reference, `oci:DIR@digest` for a layout location, `name@digest` for
 * anything else: the digest reference of the image `name` names.
 */
export function digestReference(name: string, digest: Digest): string {
  const key = repositoryKey(name);
  if (key !== undefined) return `${key}@${digest}`;
  return `${name}@${digest}`;
}

/** The name of a store's repository: `registry/repository`, or the layout's `oci:DIR`. */
export function repositoryName(store: ImageStore): string {
  const rr = store.registryRepository;
  return rr ? `${rr.registry}/${rr.repository}` : store.description;
}
