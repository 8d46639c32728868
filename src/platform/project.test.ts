import { describe, expect, it } from 'vitest';
import type { Logger } from '../util/log.js';
import { parseProjectDescriptor, resolveProjectBuildpack } from './project.js';

const collect = () => {
  const warnings: string[] = [];
  const logger = { warn: (m: string) => warnings.push(m) } as unknown as Logger;
  return { warnings, logger };
};

describe('project.toml schema 0.2', () => {
  const text = `
[_]
schema-version = "0.2"
id = "io.example.app"
name = "App"
version = "1.0"
authors = ["me"]
[[_.licenses]]
type = "MIT"
[_.metadata]
cdn = "https://cdn"

[io.buildpacks]
builder = "example/builder"
exclude = ["README.md"]

[[io.buildpacks.group]]
id = "example/node"
version = "1.0.0"

[[io.buildpacks.group]]
uri = "local-bp/"

[[io.buildpacks.group]]
id = "example/inline"
  [io.buildpacks.group.script]
  api = "0.10"
  inline = "echo hi"

[[io.buildpacks.pre.group]]
id = "example/pre"

[[io.buildpacks.post.group]]
uri = "docker://example/post:1"

[[io.buildpacks.build.env]]
name = "JAVA_OPTS"
value = "-Xmx1g"
`;
  it('normalises every table', () => {
    const d = parseProjectDescriptor(text, '/src/app/project.toml');
    expect(d.schemaVersion).toBe('0.2');
    expect(d.project).toMatchObject({ id: 'io.example.app', name: 'App', version: '1.0', authors: ['me'] });
    expect(d.project.licenses).toEqual([{ type: 'MIT', uri: undefined }]);
    expect(d.project.metadata).toEqual({ cdn: 'https://cdn' });
    expect(d.builder).toBe('example/builder');
    expect(d.exclude).toEqual(['README.md']);
    expect(d.include).toBeUndefined();
    expect(d.group.map((b) => [b.id, b.version, b.uri])).toEqual([
      ['example/node', '1.0.0', undefined],
      [undefined, undefined, 'local-bp/'],
      ['example/inline', undefined, undefined],
    ]);
    expect(d.group[2]?.script).toEqual({ api: '0.10', shell: '/bin/sh', inline: 'echo hi' });
    expect(d.pre).toHaveLength(1);
    expect(d.post[0]?.uri).toBe('docker://example/post:1');
    expect(d.env).toEqual([{ name: 'JAVA_OPTS', value: '-Xmx1g' }]);
  });

  it('accepts the deprecated [[io.buildpacks.env.build]] spelling', () => {
    const d = parseProjectDescriptor(
      '[_]\nschema-version = "0.2"\n[[io.buildpacks.env.build]]\nname = "A"\nvalue = "1"\n',
      'p.toml',
    );
    expect(d.env).toEqual([{ name: 'A', value: '1' }]);
  });

  it('rejects include together with exclude', () => {
    expect(() =>
      parseProjectDescriptor(
        '[_]\nschema-version = "0.2"\n[io.buildpacks]\ninclude = ["a"]\nexclude = ["b"]\n',
        'p.toml',
      ),
    ).toThrow(/p\.toml: io\.buildpacks: include and exclude are mutually exclusive/);
  });

  it('rejects a group entry with uri and version, or with neither id nor uri', () => {
    expect(() =>
      parseProjectDescriptor(
        '[_]\nschema-version = "0.2"\n[[io.buildpacks.group]]\nuri = "x"\nversion = "1"\n',
        'p.toml',
      ),
    ).toThrow(/io\.buildpacks\.group\[0\]: uri and version/);
    expect(() =>
      parseProjectDescriptor(
        '[_]\nschema-version = "0.2"\n[[io.buildpacks.post.group]]\nversion = "1"\n',
        'p.toml',
      ),
    ).toThrow(/io\.buildpacks\.post\.group\[0\]: needs an id or a uri/);
  });

  it('rejects an inline buildpack without api', () => {
    expect(() =>
      parseProjectDescriptor(
        '[_]\nschema-version = "0.2"\n[[io.buildpacks.group]]\nid = "x"\n[io.buildpacks.group.script]\ninline = "x"\n',
        'p.toml',
      ),
    ).toThrow(/io\.buildpacks\.group\[0\]\.script\.api/);
  });

  it('warns about keys outside the schema and rejects unknown schema versions', () => {
    const { warnings, logger } = collect();
    parseProjectDescriptor('[_]\nschema-version = "0.2"\nfoo = 1\n[io.buildpacks]\nbar = 2\n', 'p.toml', {
      logger,
    });
    expect(warnings.join('\n')).toMatch(/_\.foo/);
    expect(warnings.join('\n')).toMatch(/io\.buildpacks\.bar/);
    expect(() => parseProjectDescriptor('[_]\nschema-version = "9.9"\n', 'p.toml')).toThrow(/unsupported/);
  });

  it('warns about unknown top-level tables, [io.buildpack] as a likely typo', () => {
    const { warnings, logger } = collect();
    const d = parseProjectDescriptor(
      '[_]\nschema-version = "0.2"\n[io.buildpack]\nbuilder = "x"\n[com.example]\na = 1\n[build]\nb = 1\n',
      'p.toml',
      { logger },
    );
    expect(d.builder).toBeUndefined();
    expect(warnings).toEqual([
      'p.toml: [com.example] is not a project descriptor table and is ignored',
      'p.toml: [build] is a schema 0.1 table; schema 0.2 reads [_] and [io.buildpacks], so it is ignored',
      'p.toml: [io.buildpack] is not a project descriptor table and is ignored (did you mean [io.buildpacks]?)',
    ]);
    const v01 = collect();
    parseProjectDescriptor('[project]\nid = "a"\n[tool]\nx = 1\n', 'q.toml', { logger: v01.logger });
    expect(v01.warnings).toContain('q.toml: [tool] is not a project descriptor table and is ignored');
  });
});

describe('project.toml schema 0.1 (samples style)', () => {
  const text = `
[project]
id = "io.buildpacks.bash-script"
name = "Bash Script"
version = "1.0.0"

[build]
exclude = ["README.md", "bash-script-buildpack"]

[[build.buildpacks]]
uri = "bash-script-buildpack/"

[[build.env]]
name = "GREETING"
value = "hi"
`;
  it('reads [project] and [build] and warns that no schema version was declared', () => {
    const { warnings, logger } = collect();
    const d = parseProjectDescriptor(text, '/apps/bash-script/project.toml', { logger });
    expect(d.schemaVersion).toBe('0.1');
    expect(d.project.name).toBe('Bash Script');
    expect(d.exclude).toEqual(['README.md', 'bash-script-buildpack']);
    expect(d.group).toEqual([
      { id: undefined, version: undefined, uri: 'bash-script-buildpack/', script: undefined },
    ]);
    expect(d.env).toEqual([{ name: 'GREETING', value: 'hi' }]);
    expect(warnings).toHaveLength(1);
  });

  it('resolves a relative buildpack uri against the project dir', () => {
    const d = parseProjectDescriptor(text, '/apps/bash-script/project.toml');
    expect(resolveProjectBuildpack(d.group[0]!, '/apps/bash-script')).toEqual({
      kind: 'path',
      path: '/apps/bash-script/bash-script-buildpack/',
    });
  });
});

describe('resolveProjectBuildpack', () => {
  const none = { id: undefined, version: undefined, uri: undefined, script: undefined };
  it('knows the URI forms', () => {
    expect(resolveProjectBuildpack({ ...none, uri: 'docker://r/bp:1' }, '/p')).toEqual({
      kind: 'package',
      uri: 'docker://r/bp:1',
    });
    // Buildpackages in a layout or a .cnb file: relative to project.toml's directory, as directories are.
    expect(resolveProjectBuildpack({ ...none, uri: 'oci:pkgs/bp:1' }, '/p')).toEqual({
      kind: 'package',
      uri: 'oci:/p/pkgs/bp:1',
    });
    expect(resolveProjectBuildpack({ ...none, uri: 'oci:/abs/layout' }, '/p')).toEqual({
      kind: 'package',
      uri: 'oci:/abs/layout',
    });
    expect(resolveProjectBuildpack({ ...none, uri: 'bp.cnb' }, '/p')).toEqual({
      kind: 'package',
      uri: '/p/bp.cnb',
    });
    expect(resolveProjectBuildpack({ ...none, uri: 'https://x/bp.tgz' }, '/p')).toEqual({
      kind: 'url',
      url: 'https://x/bp.tgz',
    });
    expect(resolveProjectBuildpack({ ...none, uri: 'file:///abs/bp' }, '/p')).toEqual({
      kind: 'path',
      path: '/abs/bp',
    });
    expect(resolveProjectBuildpack({ ...none, uri: 'urn:cnb:registry:example/bp@1.2.3' }, '/p')).toEqual({
      kind: 'registry',
      id: 'example/bp',
      version: '1.2.3',
    });
    expect(resolveProjectBuildpack({ ...none, id: 'example/bp', version: '1' }, '/p')).toEqual({
      kind: 'builder',
      id: 'example/bp',
      version: '1',
    });
    expect(() => resolveProjectBuildpack({ ...none, uri: 'ftp://x/y' }, '/p')).toThrow(/unsupported scheme/);
  });
});
