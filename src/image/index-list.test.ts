import { describe, expect, it } from 'vitest';
import { assertOciValid } from '../../test/helpers/oci-schema.js';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { isPackfarmError } from '../util/errors.js';
import { type IndexChild, buildIndex, preferredIndexFormat, sortIndexChildren } from './index-list.js';

const child = (platform: string | undefined, seed: string, extra: Partial<IndexChild> = {}): IndexChild => {
  const [os, architecture, variant] = (platform ?? '').split('/');
  return {
    mediaType: MediaType.ociManifest,
    digest: sha256Digest(seed) as Digest,
    size: 100 + seed.length,
    ...(platform
      ? { platform: { os: os!, architecture: architecture!, ...(variant ? { variant } : {}) } }
      : {}),
    ...extra,
  };
};

const children = [
  child('linux/s390x', 's'),
  child('linux/arm64/v8', 'arm64'),
  child('linux/amd64', 'amd64'),
  child('linux/arm/v7', 'armv7'),
  child('linux/arm/v6', 'armv6'),
  child(undefined, 'artifact'),
  child('windows/amd64', 'win', {
    platform: { os: 'windows', architecture: 'amd64', 'os.version': '10.0.17763.1' },
  }),
];

function shuffled<T>(xs: T[], seed: number): T[] {
  const out = [...xs];
  let s = seed;
  for (let i = out.length - 1; i > 0; i--) {
    s = (s * 1103515245 + 12345) % 2 ** 31;
    const j = s % (i + 1);
    [out[i], out[j]] = [out[j]!, out[i]!];
  }
  return out;
}

describe('buildIndex', () => {
  it('gives the same bytes and digest whatever order the children come in', () => {
    const first = buildIndex(children);
    for (let seed = 1; seed <= 20; seed++) {
      const again = buildIndex(shuffled(children, seed));
      expect(again.digest).toBe(first.digest);
      expect(again.bytes.equals(first.bytes)).toBe(true);
    }
    expect(first.digest).toBe(sha256Digest(first.bytes));
    assertOciValid('index', first.bytes);
  });

  it('sorts by normalized platform, then digest, children without platform last', () => {
    const sorted = buildIndex(children).document.manifests.map((m) =>
      m.platform
        ? `${m.platform.os}/${m.platform.architecture}${m.platform.variant ? `/${m.platform.variant}` : ''}`
        : '-',
    );
    expect(sorted).toEqual([
      'linux/amd64',
      'linux/arm/v6',
      'linux/arm/v7',
      'linux/arm64',
      'linux/s390x',
      'windows/amd64',
      '-',
    ]);
  });

  it('normalizes platforms (arm64/v8 → arm64, x86_64 → amd64) and keeps os.version', () => {
    const built = buildIndex([
      child('linux/x86_64', 'a'),
      child('windows/amd64', 'w', {
        platform: { os: 'windows', architecture: 'amd64', 'os.version': '10.0.1' },
      }),
      child('linux/arm64/v8', 'b'),
    ]);
    expect(built.document.manifests.map((m) => m.platform)).toEqual([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
      { os: 'windows', architecture: 'amd64', 'os.version': '10.0.1' },
    ]);
  });

  it('orders same-platform entries by digest and merges exact duplicates', () => {
    const a = child('linux/amd64', 'one');
    const b = child('linux/amd64', 'two');
    const sorted = sortIndexChildren([b, a, b]);
    expect(sorted.map((c) => c.digest)).toEqual([a.digest, b.digest].sort());
  });

  it('refuses the same digest with two different descriptors', () => {
    const a = child('linux/amd64', 'one');
    const a2 = { ...a, platform: { os: 'linux', architecture: 'arm64' } };
    try {
      buildIndex([a, a2]);
      expect.unreachable();
    } catch (err) {
      expect(isPackfarmError(err, 'DUPLICATE_CHILD')).toBe(true);
    }
  });

  it('writes annotations only in OCI indexes', () => {
    const annotated = [
      child('linux/amd64', 'a', { mediaType: MediaType.dockerManifest, annotations: { k: 'v' } }),
      child('linux/arm64', 'b', { mediaType: MediaType.dockerManifest }),
    ];
    const oci = buildIndex(annotated, { annotations: { 'org.opencontainers.image.version': '1' } });
    expect(oci.mediaType).toBe(MediaType.ociIndex);
    expect(oci.document.annotations).toEqual({ 'org.opencontainers.image.version': '1' });
    expect(oci.document.manifests[0]?.annotations).toEqual({ k: 'v' });
    assertOciValid('index', oci.bytes);

    const docker = buildIndex(annotated, { format: 'docker', annotations: { x: 'y' } });
    expect(docker.mediaType).toBe(MediaType.dockerManifestList);
    expect(docker.bytes.toString()).not.toContain('annotations');
    expect(docker.warnings).toHaveLength(2);
    expect(docker.document.manifests.map((m) => m.platform?.architecture)).toEqual(['amd64', 'arm64']);
  });

  it('refuses a Docker list with OCI children or children without a platform', () => {
    const err = (() => {
      try {
        buildIndex([child('linux/amd64', 'a')], { format: 'docker' });
      } catch (e) {
        return e;
      }
    })();
    expect(isPackfarmError(err, 'INDEX_FORMAT_MISMATCH')).toBe(true);
    expect((err as Error).message).toContain(MediaType.ociManifest);
    expect(() =>
      buildIndex([child(undefined, 'a', { mediaType: MediaType.dockerManifest })], { format: 'docker' }),
    ).toThrowError(/needs a platform/);
  });

  it('prefers a Docker list only when every child is Docker-typed', () => {
    expect(preferredIndexFormat([child('linux/amd64', 'a', { mediaType: MediaType.dockerManifest })])).toBe(
      'docker',
    );
    expect(
      preferredIndexFormat([
        child('linux/amd64', 'a', { mediaType: MediaType.dockerManifest }),
        child('linux/arm64', 'b'),
      ]),
    ).toBe('oci');
    expect(preferredIndexFormat([])).toBe('oci');
  });
});
