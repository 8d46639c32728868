import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import type { Digest } from '../oci/digest.js';
import { type BuildpackModule, layersLabel, targetJson, uniqueModules } from './modules.js';

const module = (id: string, version: string): BuildpackModule => ({
  id,
  version,
  info: { api: '0.12', layerDiffID: `sha256:${'0'.repeat(63)}${id.length}` },
  layer: {
    digest: `sha256:${'1'.repeat(64)}` as Digest,
    size: 0,
    mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip',
    open: () => Readable.from([]),
  },
});

describe('buildpack modules as pack orders and labels them', () => {
  it('adds layers sorted by "id@version" but keys the layers label by id, then version', () => {
    // "a/b-c@1" < "a/b@1" as whole strings ('-' < '@'), while the id "a/b" sorts before "a/b-c".
    const mods = [
      module('a/b', '1.2.0'),
      module('a/b-c', '1.0.0'),
      module('a/b', '1.10.0'),
      module('a/b', '1.2.0'),
    ];
    expect(uniqueModules(mods).map((m) => `${m.id}@${m.version}`)).toEqual([
      'a/b-c@1.0.0',
      'a/b@1.10.0',
      'a/b@1.2.0',
    ]);
    const label = layersLabel(uniqueModules(mods));
    expect(Object.keys(label)).toEqual(['a/b', 'a/b-c']);
    expect(Object.keys(label['a/b']!)).toEqual(['1.10.0', '1.2.0']);
  });

  it('writes targets with os and arch always present, the rest only when set', () => {
    expect(targetJson({ os: 'linux' })).toEqual({ os: 'linux', arch: '' });
    expect(JSON.stringify(targetJson({ arch: 'arm64', variant: 'v8', distros: [{ name: 'ubuntu' }] }))).toBe(
      '{"os":"","arch":"arm64","variant":"v8","distros":[{"name":"ubuntu"}]}',
    );
    expect(targetJson({ os: 'linux', arch: 'amd64', distros: [] })).toEqual({ os: 'linux', arch: 'amd64' });
  });
});
