import { createWriteStream } from 'node:fs';
import { mkdir, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { type Digest, createDigester, digestHex } from '../oci/digest.js';
import { PackfarmError } from '../util/errors.js';
import { tempPathFor } from '../util/fs.js';

/**
 * A content-addressed blob directory (`<dir>/sha256/<hex>`): what a node keeps of the blobs coordinators sent
 * it (app tars, buildpacks), so nothing is sent twice. A blob is written to a temp name, checked against its
 * digest, then renamed: a half-received or corrupt blob never appears under its name.
 */
export interface BlobCache {
  readonly dir: string;
  path(digest: Digest): string;
  has(digest: Digest): Promise<boolean>;
  /** Start receiving `digest`: append chunks in order, then `end()` verifies and publishes it. */
  receive(digest: Digest): BlobReceiver;
}

export interface BlobReceiver {
  write(chunk: Buffer): void;
  /** Resolves when the blob is verified and in place; rejects (and removes the temp file) otherwise. */
  end(): Promise<void>;
  abort(): void;
}

export function openBlobCache(dir: string): BlobCache {
  const path = (d: Digest) => join(dir, 'sha256', digestHex(d));
  return {
    dir,
    path,
    async has(d) {
      return stat(path(d)).then(
        (s) => s.isFile(),
        () => false,
      );
    },
    receive(d) {
      const target = path(d);
      const tmp = tempPathFor(target);
      const digester = createDigester();
      let failed: Error | undefined;
      const ready = mkdir(join(dir, 'sha256'), { recursive: true }).then(() => createWriteStream(tmp));
      // Writes queue behind the mkdir; each chunk is hashed as it arrives.
      let chain: Promise<unknown> = ready;
      const writeChunk = (chunk: Buffer) =>
        ready.then(
          (ws) =>
            new Promise<void>((resolve, reject) => {
              ws.write(chunk, (err) => (err ? reject(err) : resolve()));
            }),
        );
      return {
        write(chunk) {
          digester.update(chunk);
          chain = chain
            .then(() => writeChunk(chunk))
            .catch((err: Error) => {
              failed ??= err;
            });
        },
        async end() {
          await chain;
          const ws = await ready;
          await new Promise<void>((resolve) => ws.end(resolve));
          if (failed) {
            await rm(tmp, { force: true });
            throw new PackfarmError('BLOB_WRITE_FAILED', `writing blob ${d} to ${dir}: ${failed.message}`, {
              cause: failed,
            });
          }
          const got = digester.digest();
          if (got !== d) {
            await rm(tmp, { force: true });
            throw new PackfarmError(
              'BLOB_DIGEST_MISMATCH',
              `blob ${d} arrived with digest ${got} (${digester.size()} bytes): refused`,
            );
          }
          await rename(tmp, target);
        },
        abort() {
          failed ??= new Error('aborted');
          void chain.then(async () => {
            const ws = await ready.catch(() => undefined);
            ws?.destroy();
            await rm(tmp, { force: true });
          });
        },
      };
    },
  };
}
