import { createHash } from 'node:crypto';
import { PackfarmError } from '../util/errors.js';

/** A content digest, `algorithm:hex`. Only sha256 is produced; sha512 is accepted on read. */
export type Digest = `${string}:${string}`;

const DIGEST_RE = /^(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})$/;

export function isDigest(s: string): s is Digest {
  return DIGEST_RE.test(s);
}

/** Validate a digest string; the error names where it came from. */
export function parseDigest(s: string, source = 'digest'): Digest {
  if (!isDigest(s)) {
    throw new PackfarmError(
      'INVALID_DIGEST',
      `${source}: "${s}" is not a valid digest (expected sha256: followed by 64 lowercase hex characters)`,
    );
  }
  return s;
}

export function sha256Digest(data: string | Uint8Array): Digest {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

export function digestHex(d: Digest): string {
  return d.slice(d.indexOf(':') + 1);
}

export function digestAlgorithm(d: Digest): string {
  return d.slice(0, d.indexOf(':'));
}

/** Incremental sha256 over chunks, also counting bytes. */
export function createDigester(): { update(chunk: Uint8Array): void; digest(): Digest; size(): number } {
  const h = createHash('sha256');
  let n = 0;
  return {
    update(chunk) {
      h.update(chunk);
      n += chunk.byteLength;
    },
    digest: () => `sha256:${h.digest('hex')}`,
    size: () => n,
  };
}
