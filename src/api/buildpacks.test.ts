import { describe, expect, it } from 'vitest';
import { parseProjectDescriptor } from '../platform/project.js';
import { buildpacksVaryByPlatform } from './buildpacks.js';

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
