import { cp, mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { buildpackDirFor, readBuildpackDescriptor } from '../../src/buildpack/descriptor.js';
import { collectUserEnv, writePlatformEnv } from '../../src/platform/env-files.js';
import { readProjectDescriptor, resolveProjectBuildpack } from '../../src/platform/project.js';
import { build } from '../../src/phase/build.js';

/**
 * project.toml to build: a descriptor naming a buildpack by a path relative to itself, plus build env. The
 * platform side (resolve the buildpack, lay it out as `<buildpacks>/<id>/<version>/`, write `<platform>/env/`)
 * is done here with packfarm's own functions; then the build phase runs it.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const fixture = join(repoRoot, 'test', 'fixtures', 'apps', 'project-relative');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-build-project-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('project.toml with a relative buildpack uri', () => {
  it('resolves the buildpack, writes the env and builds with it', async () => {
    const app = join(root, 'workspace');
    await cp(fixture, app, { recursive: true });
    const project = await readProjectDescriptor(join(app, 'project.toml'));
    expect(project?.schemaVersion).toBe('0.2');
    expect(project?.exclude).toEqual(['local-buildpack', 'README.md']);

    const src = resolveProjectBuildpack(project!.group[0]!, app);
    expect(src).toEqual({ kind: 'path', path: join(app, 'local-buildpack/') });
    if (src.kind !== 'path') throw new Error('expected a path');

    const descriptor = await readBuildpackDescriptor(src.path);
    const buildpacks = join(root, 'buildpacks');
    await mkdir(dirname(buildpackDirFor(buildpacks, descriptor.id, descriptor.version)), { recursive: true });
    await cp(src.path, buildpackDirFor(buildpacks, descriptor.id, descriptor.version), { recursive: true });

    const platform = join(root, 'platform');
    await writePlatformEnv(
      platform,
      await collectUserEnv({ project: project!.env, envFlags: [], hostEnv: {} }),
    );

    const layers = join(root, 'layers');
    const result = await build({
      appDir: app,
      layersDir: layers,
      platformDir: platform,
      buildpacksDir: buildpacks,
      group: { group: [{ id: descriptor.id, version: descriptor.version, api: descriptor.api }] },
      plan: { entries: [] },
      hostEnv: { PATH: '/usr/bin:/bin' },
    });
    expect(await readFile(join(layers, 'fixtures_local', 'greeting'), 'utf8')).toBe(
      'hello from project.toml',
    );
    expect(result.metadata.buildpackDefaultProcessType).toBe('app');
    expect(result.metadata.processes[0]?.command).toEqual([join(app, 'app.sh')]);
  });
});
