import { describe, expect, it } from 'vitest';
import { parseProjectDescriptor } from '../platform/project.js';
import { buildpacksVaryByPlatform, localBuildpackages } from './buildpacks.js';

describe('buildpacksVaryByPlatform', () => {
  const project = (group: string) =>
    parseProjectDescriptor(`[_]\nschema-version = "0.2"\n${group}`, '/app/project.toml');

  it('is true when a flag or a project.toml uri names a buildpackage', () => {
    expect(buildpacksVaryByPlatform(['docker://r.example/bp:1'], undefined)).toBe(true);
    expect(buildpacksVaryByPlatform(['./bp', 'oci:pkgs/bp:1'], undefined)).toBe(true);
    expect(buildpacksVaryByPlatform(['bp.cnb'], undefined)).toBe(true);
    expect(
      buildpacksVaryByPlatform([], project('[[io.buildpacks.post.group]]\nuri = "oci:../pkgs/bp"\n')),
    ).toBe(true);
  });

  it('is false for directories, archives, builder ids and inline scripts', () => {
    expect(buildpacksVaryByPlatform(['./bp', 'bp.tgz', 'acme/bp@1.0.0'], undefined)).toBe(false);
    expect(
      buildpacksVaryByPlatform(
        [],
        project(
          '[[io.buildpacks.group]]\nuri = "../bp"\n[[io.buildpacks.group]]\nid = "acme/x"\n[io.buildpacks.group.script]\napi = "0.12"\ninline = "true"\n',
        ),
      ),
    ).toBe(false);
  });
});

describe('localBuildpackages', () => {
  it('names oci: layouts and .cnb files, from flags and project.toml, but not registry images', () => {
    const project = parseProjectDescriptor(
      '[_]\nschema-version = "0.2"\n[[io.buildpacks.group]]\nuri = "pkgs/bp.cnb"\n[[io.buildpacks.group]]\nuri = "docker://r.example/bp:1"\n',
      '/app/project.toml',
    );
    expect(
      localBuildpackages(
        ['docker://r.example/x:1', 'oci:pkgs/bp:1', './dir', 'bp.cnb', 'acme/bp@1'],
        project,
      ),
    ).toEqual(['--buildpack oci:pkgs/bp:1', '--buildpack bp.cnb', '/app/project.toml uri pkgs/bp.cnb']);
    expect(localBuildpackages(['./dir', 'docker://r.example/x:1'], undefined)).toEqual([]);
  });
});
