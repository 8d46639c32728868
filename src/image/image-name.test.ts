import { describe, expect, it } from 'vitest';
import type { Digest } from '../oci/digest.js';
import { parsePlatform } from '../oci/platform.js';
import { ImageIndexSchema } from '../oci/schemas.js';
import { isPackfarmError } from '../util/errors.js';
import { digestReference, repositoryName } from './image-name.js';
import { selectIndexChild } from './read.js';
import type { ImageStore } from './store.js';

const d = `sha256:${'b'.repeat(64)}` as Digest;

describe('digestReference: one name for export, rebase and analyze', () => {
  it('names registry references, docker:// references and layout locations the same way everywhere', () => {
    expect(digestReference('reg.example:5000/team/run:v2', d)).toBe(`reg.example:5000/team/run@${d}`);
    expect(digestReference('docker://busybox:1', d)).toBe(`docker.io/library/busybox@${d}`);
    expect(digestReference('busybox', d)).toBe(`docker.io/library/busybox@${d}`);
    expect(digestReference('oci:/data/run:v2', d)).toBe(`oci:/data/run@${d}`);
  });

  it('takes a store by its repository', () => {
    const registry = { registryRepository: { registry: 'reg.example', repository: 'app' }, description: 'x' };
    expect(digestReference(repositoryName(registry as unknown as ImageStore), d)).toBe(
      `reg.example/app@${d}`,
    );
    const layout = { registryRepository: undefined, description: 'oci:/data/app' };
    expect(digestReference(repositoryName(layout as unknown as ImageStore), d)).toBe(`oci:/data/app@${d}`);
  });
});

describe('selectIndexChild', () => {
  const index = ImageIndexSchema.parse({
    schemaVersion: 2,
    manifests: [
      {
        mediaType: 'application/vnd.oci.image.manifest.v1+json',
        digest: d,
        size: 1,
        platform: { os: 'linux', architecture: 'arm64' },
      },
    ],
  });

  it('picks the child for the platform, or names what the index has', () => {
    expect(selectIndexChild(index, parsePlatform('linux/arm64/v8'), 'src').digest).toBe(d);
    try {
      selectIndexChild(index, parsePlatform('linux/amd64'), 'reg/app@x', 'use --platform');
      expect.unreachable();
    } catch (err) {
      expect(isPackfarmError(err, 'NO_MATCHING_PLATFORM')).toBe(true);
      expect((err as Error).message).toBe('reg/app@x: no image for linux/amd64 (the index has linux/arm64)');
      expect((err as { hint: string }).hint).toBe('use --platform');
    }
  });
});
