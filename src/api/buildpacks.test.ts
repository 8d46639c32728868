import { describe, expect, it } from 'vitest';
import { parseProjectDescriptor } from '../platform/project.js';
import { buildpacksVaryByPlatform, isLocalBuildpackage, projectBuildpacksInUse } from './buildpacks.js';

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

describe('isLocalBuildpackage', () => {
  it('names oci: layouts and .cnb files, but not registry images, dirs or builder ids', () => {
    const uris = ['docker://r.example/x:1', 'oci:pkgs/bp:1', './dir', 'bp.cnb', 'acme/bp@1', 'pkgs/bp.cnb'];
    expect(uris.filter(isLocalBuildpackage)).toEqual(['oci:pkgs/bp:1', 'bp.cnb', 'pkgs/bp.cnb']);
  });
});

describe('projectBuildpacksInUse', () => {
  const project = parseProjectDescriptor(
    '[_]\nschema-version = "0.2"\n[[io.buildpacks.group]]\nuri = "pkgs/bp.cnb"\n[[io.buildpacks.pre.group]]\nuri = "docker://r.example/pre:1"\n[[io.buildpacks.post.group]]\nuri = "oci:post"\n',
    '/app/project.toml',
  );
  it('is the group with pre and post when no --buildpack replaces it', () => {
    expect(projectBuildpacksInUse([], project).map((b) => b.uri)).toEqual([
      'pkgs/bp.cnb',
      'docker://r.example/pre:1',
      'oci:post',
    ]);
  });
  it('keeps pre and post only when --buildpack flags replace the group; nothing without project.toml', () => {
    expect(projectBuildpacksInUse(['./bp'], project).map((b) => b.uri)).toEqual([
      'docker://r.example/pre:1',
      'oci:post',
    ]);
    expect(projectBuildpacksInUse(['./bp'], undefined)).toEqual([]);
  });
});
