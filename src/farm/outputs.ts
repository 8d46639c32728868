import type { BuildPlan } from '../api/plan.js';
import { copyImage } from '../image/copy.js';
import type { Digest } from '../oci/digest.js';

/**
 * `--tag` into other repositories on a farm. A node pushes its per-arch image to the first output only (its
 * credentials cover that repository and no other); the coordinator then copies the image by digest into every
 * other output — blobs mounted across repositories of one registry, streamed otherwise; the manifest bytes
 * unchanged, so the digest is the same — as a local build's exporter would have written it there. build() then
 * publishes the index into each output (several targets), or tagOutputs tags the image (one target).
 * Returns the blob bytes uploaded (mounted and present blobs move none).
 */
export async function copyToOtherOutputs(
  plan: BuildPlan,
  digest: Digest,
  signal?: AbortSignal,
): Promise<number> {
  const [first, ...others] = plan.outputs;
  if (!first) return 0;
  let uploaded = 0;
  for (const out of others) {
    const r = await copyImage({
      src: first.store,
      srcTarget: digest,
      dst: out.store,
      ...(signal ? { signal } : {}),
    });
    uploaded += r.bytesUploaded;
  }
  return uploaded;
}

/**
 * One target (no index): the image itself gets every output's tags, as a local build writes them; a tag
 * already naming it is left alone. Returns the reported names.
 */
export async function tagOutputs(plan: BuildPlan, digest: Digest): Promise<string[]> {
  const names: string[] = [];
  for (const out of plan.outputs) {
    const m = await out.store.getManifest(digest);
    for (const [i, tag] of out.tags.entries()) {
      const current = await out.store.resolve(tag);
      if (current?.digest !== digest)
        await out.store.putManifest({ bytes: m.bytes, mediaType: m.mediaType, tag });
      names.push(out.names?.[i] ?? `${out.store.description}:${tag}`);
    }
  }
  return names;
}
