import { describe, expect, it } from 'vitest';
import { parseBuilderToml } from './builder-toml.js';

const SRC = '/b/builder.toml';

describe('parseBuilderToml', () => {
  it('reads buildpacks, order (versions optional), [run] images and ignores [build]/[lifecycle]', () => {
    const t = parseBuilderToml(
      `description = "demo"
[[buildpacks]]
id = "acme/node"
version = "1.0.0"
uri = "bp/node"
[[buildpacks]]
uri = "bp/npm.tgz"
[[order]]
[[order.group]]
id = "acme/node"
version = "1.0.0"
[[order.group]]
id = "acme/npm"
optional = true
[run]
[[run.images]]
image = "registry.example/run:1"
mirrors = ["mirror.example/run:1"]
[[run.images]]
image = "registry.example/other:1"
[build]
image = "registry.example/build:1"
[lifecycle]
version = "0.20.0"
[[targets]]
os = "linux"
arch = "amd64"
`,
      SRC,
    );
    expect(t.description).toBe('demo');
    expect(t.buildpacks).toEqual([
      { id: 'acme/node', version: '1.0.0', uri: 'bp/node' },
      { uri: 'bp/npm.tgz' },
    ]);
    expect(t.order).toEqual([
      {
        group: [
          { id: 'acme/node', version: '1.0.0', optional: false },
          { id: 'acme/npm', optional: true },
        ],
      },
    ]);
    expect(t.runImages).toEqual(['registry.example/run:1', 'mirror.example/run:1']);
    expect(t.buildImage).toBe('registry.example/build:1');
  });

  it('falls back to the legacy [stack] run-image and mirrors', () => {
    const t = parseBuilderToml(
      `[stack]
id = "io.buildpacks.stacks.jammy"
build-image = "b:1"
run-image = "r:1"
run-image-mirrors = ["m:1", "n:1"]
`,
      SRC,
    );
    expect(t.runImages).toEqual(['r:1', 'm:1', 'n:1']);
    expect(t.buildImage).toBe('b:1');
    expect(t.buildpacks).toEqual([]);
  });

  it('names the file and field of a mistake', () => {
    expect(() => parseBuilderToml('[[buildpacks]]\nid = "x"\n', SRC)).toThrow(
      /\/b\/builder\.toml: invalid content: buildpacks\[0\]\.uri: is required/,
    );
    expect(() => parseBuilderToml('[[order]]\n[[order.group]]\nversion = "1"\n', SRC)).toThrow(
      /builder\.toml: invalid content: order\[0\]\.group\[0\]\.id/,
    );
    expect(() => parseBuilderToml('[[order]]\n', SRC)).toThrow(/order\[0\]\.group: a group needs/);
    expect(() => parseBuilderToml('[[buildpacks]]\nimage = "x"\nuri = "y"\n', SRC)).toThrow(
      /buildpacks\[0\]\.image: buildpack images are not supported yet/,
    );
    expect(() => parseBuilderToml('[run\n', SRC)).toThrow(/builder\.toml: not valid TOML/);
  });
});
