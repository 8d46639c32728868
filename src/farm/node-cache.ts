import { createReadStream } from 'node:fs';
import { link, mkdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Digest } from '../oci/digest.js';
import type { BlobCache } from './blob-cache.js';
import { readDirCacheState } from './node-inputs.js';
import type { Channel, DirCacheState, FromNode } from './protocol.js';

/**
 * --cache-dir through a node, after the build: the cache the job committed goes back to the coordinator. Its
 * layer tars are offered with `have` (kind `cache`) and those the coordinator's cache dir lacks are sent; the
 * state (metadata and layer list) then rides in the result, and the coordinator commits it. The layers also go
 * into this node's blob cache (hard links: the job dir is on the same disk), so the coordinator offering them
 * back next time costs nothing.
 */
export async function offerCacheBlobs(
  link_: {
    channel: Channel;
    wants: Map<string, (digests: Digest[]) => void>;
    send: (msg: FromNode) => Promise<unknown>;
    closed: Promise<void>;
    cache: BlobCache;
  },
  job: string,
  committed: string,
): Promise<DirCacheState | undefined> {
  const { channel, wants, send, closed, cache } = link_;
  const found = await readDirCacheState(committed);
  if (!found) return undefined;
  for (const [d, path] of found.files) {
    if (await cache.has(d)) continue;
    await mkdir(dirname(cache.path(d)), { recursive: true });
    // The exporter named the file by its digest as it wrote it; a racing link of the same content is fine.
    await link(path, cache.path(d)).catch(() => {});
  }
  const digests = [...found.files.keys()];
  const id = `${job}:cache`;
  const wanted = new Promise<Digest[]>((resolve) => wants.set(id, resolve));
  await send({ type: 'have', id, job, digests, kind: 'cache' });
  const want = await Promise.race([wanted, closed.then(() => [] as Digest[])]);
  for (const d of want) {
    const path = found.files.get(d);
    if (path) await channel.sendBlob(d, createReadStream(path));
  }
  return found.state;
}
