import { describe, expect, it } from 'vitest';
import type { BaseImage } from '../image/read.js';
import type { ImageStore } from '../image/store.js';
import type { Digest } from '../oci/digest.js';
import { describeAppImage } from './inspect.js';

const D = (c: string) => `sha256:${c.repeat(64)}` as Digest;

function image(
  config: Record<string, unknown>,
  platform = { os: 'linux', architecture: 'arm64' },
): BaseImage {
  return {
    store: { description: 'oci:/x' } as ImageStore,
    digest: D('a'),
    topDigest: D('a'),
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    manifest: { schemaVersion: 2, config: { mediaType: 'x', digest: D('b'), size: 1 }, layers: [] },
    manifestBytes: Buffer.from('{}'),
    config: { ...platform, rootfs: { type: 'layers', diff_ids: [] }, config } as BaseImage['config'],
    configBytes: Buffer.from('{}'),
    platform,
  };
}

describe('describeAppImage', () => {
  it('reads an image written by the reference lifecycle: default from the entrypoint, legacy stack', () => {
    const d = describeAppImage(
      image({
        Entrypoint: ['/cnb/process/worker'],
        WorkingDir: '/workspace',
        Env: ['CNB_APP_DIR=/workspace'],
        Labels: {
          'io.buildpacks.stack.id': 'io.buildpacks.stacks.jammy',
          'io.buildpacks.rebasable': 'false',
          'io.buildpacks.lifecycle.metadata': JSON.stringify({
            runImage: { topLayer: D('c'), reference: 'index.docker.io/x/run@sha256:' },
            stack: { runImage: { image: 'x/run', mirrors: ['gcr.io/x/run'] } },
          }),
          'io.buildpacks.build.metadata': JSON.stringify({
            buildpacks: [{ id: 'a/b', version: '1' }],
            processes: [
              { type: 'web', command: ['node'], args: ['i.js'], buildpackID: 'a/b', 'working-dir': 'srv' },
              { type: 'worker', command: ['node', 'w.js'], buildpackID: 'a/b' },
            ],
          }),
        },
      }),
      'linux/arm64',
    );
    expect(d.stack).toBe('io.buildpacks.stacks.jammy');
    expect(d.rebasable).toBe(false);
    expect(d.runImage).toEqual({
      reference: 'index.docker.io/x/run@sha256:',
      topLayer: D('c'),
      image: 'x/run',
      mirrors: ['gcr.io/x/run'],
    });
    expect(d.buildpacks).toEqual([{ id: 'a/b', version: '1', homepage: null }]);
    expect(d.processes.map((p) => [p.type, p.default, p.workingDir])).toEqual([
      ['web', false, '/workspace/srv'],
      ['worker', true, '/workspace'],
    ]);
    expect(d.target).toEqual({ os: 'linux', arch: 'arm64', variant: null, distro: null, baseId: null });
    expect(d.sbom).toBeNull();
  });

  it('treats an image without the lifecycle labels as not CNB, and tolerates empty labels', () => {
    const d = describeAppImage(image({ Labels: { 'io.buildpacks.lifecycle.metadata': '' } }), 'linux/arm64');
    expect(d.cnb).toBe(false);
    expect(d.rebasable).toBe(false);
    expect(d.runImage).toBeNull();
  });

  it('names the image and label for a bad label', () => {
    expect(() =>
      describeAppImage(image({ Labels: { 'io.buildpacks.build.metadata': '[1' } }), 'linux/arm64'),
    ).toThrow(/^oci:\/x@sha256:a{64}: label io\.buildpacks\.build\.metadata: not valid JSON/);
  });
});
