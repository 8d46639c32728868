import { chmod, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  buildpackDirFor,
  createBuildpackStore,
  escapeBuildpackId,
  parseBuildpackDescriptor,
  supportsExecEnv,
} from './descriptor.js';

const parse = (text: string, binFiles: string[] = ['detect', 'build']) =>
  parseBuildpackDescriptor(text, { source: '/bp/buildpack.toml', dir: '/bp', binFiles });

describe('parseBuildpackDescriptor', () => {
  it('reads the buildpack table, targets and both variant keys', () => {
    const d = parse(`api = "0.12"
[buildpack]
id = "acme/node"
version = "1.2.3"
name = "Node"
homepage = "https://acme"
clear-env = true
sbom-formats = ["application/vnd.cyclonedx+json"]
exec-env = ["production", "test"]
[[targets]]
os = "linux"
arch = "arm"
arch-variant = "v7"
[[targets]]
os = "linux"
arch = "amd64"
variant = "v3"
[[targets.distros]]
name = "ubuntu"
version = "22.04"
[metadata]
x = 1
`);
    expect(d).toMatchObject({
      api: '0.12',
      id: 'acme/node',
      version: '1.2.3',
      name: 'Node',
      homepage: 'https://acme',
      clearEnv: true,
      sbomFormats: ['application/vnd.cyclonedx+json'],
      execEnv: ['production', 'test'],
      targetsFrom: 'targets',
      metadata: { x: 1 },
      dir: '/bp',
    });
    expect(d.targets).toEqual([
      { os: 'linux', arch: 'arm', variant: 'v7' },
      { os: 'linux', arch: 'amd64', variant: 'v3', distros: [{ name: 'ubuntu', version: '22.04' }] },
    ]);
  });

  it('accepts the spec shape of exec-env', () => {
    const d = parse(
      'api = "0.12"\n[buildpack]\nid = "a"\nversion = "1"\n[[buildpack.exec-env]]\nname = "test"\n',
    );
    expect(d.execEnv).toEqual(['test']);
    expect(supportsExecEnv(d, 'test')).toBe(true);
    expect(supportsExecEnv(d, 'production')).toBe(false);
    // Before Buildpack API 0.12 the key means nothing.
    const old = parse('api = "0.11"\n[buildpack]\nid = "a"\nversion = "1"\nexec-env = ["test"]\n');
    expect(supportsExecEnv(old, 'production')).toBe(true);
  });

  it('maps deprecated stacks to targets', () => {
    const bionic = parse(
      'api = "0.10"\n[buildpack]\nid = "a"\nversion = "1"\n[[stacks]]\nid = "io.buildpacks.stacks.bionic"\n[[stacks]]\nid = "other"\n',
    );
    expect(bionic.targets).toEqual([
      { os: 'linux', arch: 'amd64', distros: [{ name: 'ubuntu', version: '18.04' }] },
    ]);
    expect(bionic.targetsFrom).toBe('stacks');
    const any = parse('api = "0.9"\n[buildpack]\nid = "a"\nversion = "1"\n[[stacks]]\nid = "*"\n');
    expect(any.targets).toEqual([{}]);
    // API 0.9 with several stacks: bionic is not translated; "other" gives nothing, so bin/build decides.
    const old = parse(
      'api = "0.9"\n[buildpack]\nid = "a"\nversion = "1"\n[[stacks]]\nid = "io.buildpacks.stacks.bionic"\n[[stacks]]\nid = "other"\n',
    );
    expect(old.targets).toEqual([{ os: 'linux' }]);
    expect(old.targetsFrom).toBe('inferred');
  });

  it('infers a target from bin/ when none is declared', () => {
    const text = 'api = "0.12"\n[buildpack]\nid = "a"\nversion = "1"\n';
    expect(parse(text, ['detect', 'build']).targets).toEqual([{ os: 'linux' }]);
    expect(parse(text, ['detect.bat', 'build.bat']).targets).toEqual([{ os: 'windows' }]);
    const composite = parse(
      `${text}[[order]]\n[[order.group]]\nid = "b"\nversion = "2"\noptional = true\n`,
      [],
    );
    expect(composite.targets).toEqual([]);
    expect(composite.order).toEqual([{ group: [{ id: 'b', version: '2', optional: true }] }]);
  });

  it('names the file and the field on bad content', () => {
    expect(() => parse('[buildpack]\nid = "a"\nversion = "1"\n')).toThrow(
      '/bp/buildpack.toml: invalid content: api: is required',
    );
    expect(() => parse('api = "0.12"\n[buildpack]\nversion = "1"\n')).toThrow(/buildpack\.id/);
    expect(() => parse('api = "0.12"\n[buildpack]\nid = "app"\nversion = "1"\n')).toThrow(
      /buildpack\.id: is reserved/,
    );
    expect(() => parse('api = "0.12"\n[buildpack]\nid = "a b"\nversion = "1"\n')).toThrow(
      /buildpack\.id: may only contain/,
    );
    expect(() => parse('api = "0.12"\n[buildpack]\nid = "a"\nversion = "1"\nclear-env = "yes"\n')).toThrow(
      /buildpack\.clear-env/,
    );
    expect(() =>
      parse(
        'api = "0.12"\n[buildpack]\nid = "a"\nversion = "1"\n[[targets]]\nvariant = "v7"\narch-variant = "v6"\n',
      ),
    ).toThrow(/targets\[0\]: "variant" \(v7\) and "arch-variant" \(v6\) disagree/);
    expect(() => parse('api = "0.12"\n[buildpack\n')).toThrow(/\/bp\/buildpack.toml: not valid TOML/);
  });
});

describe('buildpack store', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('looks buildpacks up as <dir>/<id with / as _>/<version>/ and caches them', async () => {
    const root = await mkdtemp(join(tmpdir(), 'bpstore-'));
    dirs.push(root);
    expect(escapeBuildpackId('acme/node/x')).toBe('acme_node_x');
    const dir = buildpackDirFor(root, 'acme/node', '1.0.0');
    expect(dir).toBe(join(root, 'acme_node', '1.0.0'));
    await mkdir(join(dir, 'bin'), { recursive: true });
    await writeFile(
      join(dir, 'buildpack.toml'),
      'api = "0.12"\n[buildpack]\nid = "acme/node"\nversion = "1.0.0"\n',
    );
    await writeFile(join(dir, 'bin', 'build'), '#!/bin/sh\n');
    await chmod(join(dir, 'bin', 'build'), 0o755);
    const store = createBuildpackStore(root);
    const d = await store.lookup('acme/node', '1.0.0');
    expect(d.dir).toBe(dir);
    expect(d.targets).toEqual([{ os: 'linux' }]);
    expect(await store.lookup('acme/node', '1.0.0')).toBe(d);
    await expect(store.lookup('acme/node', '2.0.0')).rejects.toThrow(
      `buildpack acme/node@2.0.0 not found: ${join(root, 'acme_node', '2.0.0', 'buildpack.toml')} does not exist`,
    );
  });
});
