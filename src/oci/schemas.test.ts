import { describe, expect, it } from 'vitest';
import { parseWith } from '../util/validate.js';
import { isDigest, parseDigest, sha256Digest } from './digest.js';
import { ImageConfigSchema, ImageIndexSchema, ImageManifestSchema } from './schemas.js';

const d = (c: string) => `sha256:${c.repeat(64)}`;

describe('digests', () => {
  it('hashes bytes', () => {
    expect(sha256Digest('')).toBe('sha256:e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855');
  });
  it.each(['sha256:abc', `sha256:${'A'.repeat(64)}`, `md5:${'a'.repeat(32)}`, `sha256:${'a'.repeat(65)}`])(
    'rejects %s',
    (s) => {
      expect(isDigest(s)).toBe(false);
      expect(() => parseDigest(s, 'index.json manifests[0].digest')).toThrowError(
        /index.json manifests\[0\]\.digest/,
      );
    },
  );
});

describe('document schemas', () => {
  it('keeps unknown fields and tolerates unknown child media types in an index', () => {
    const idx = parseWith(
      ImageIndexSchema,
      {
        schemaVersion: 2,
        mediaType: 'application/vnd.oci.image.index.v1+json',
        manifests: [{ mediaType: 'application/vnd.example.thing', digest: d('a'), size: 3, extra: 1 }],
        vendorField: true,
      },
      'test',
    );
    expect((idx as Record<string, unknown>).vendorField).toBe(true);
    expect((idx.manifests[0] as Record<string, unknown>).extra).toBe(1);
  });

  it('names the field that is wrong', () => {
    expect(() =>
      parseWith(
        ImageManifestSchema,
        { schemaVersion: 2, config: { mediaType: 'x', digest: 'nope', size: 1 }, layers: [] },
        'https://r/v2/app/manifests/1',
      ),
    ).toThrowError(/https:\/\/r\/v2\/app\/manifests\/1: invalid content: config\.digest/);
  });

  it('parses an image config', () => {
    const cfg = parseWith(
      ImageConfigSchema,
      {
        architecture: 'arm64',
        os: 'linux',
        rootfs: { type: 'layers', diff_ids: [d('b')] },
        config: { Env: null },
      },
      'config',
    );
    expect(cfg.rootfs.diff_ids).toHaveLength(1);
  });
});
