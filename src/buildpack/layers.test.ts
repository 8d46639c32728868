import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Volume } from 'memfs';
import { afterEach, describe, expect, it } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import { parseToml } from '../util/toml.js';
import {
  type LayersFs,
  encodeRestoredLayerToml,
  escapeId,
  ignoreUntypedLayers,
  layerExecEnv,
  parseLayerToml,
  readBuildpackLayers,
} from './layers.js';

const memfs = (tree: Record<string, string | null>) => Volume.fromJSON(tree).promises as unknown as LayersFs;

describe('parseLayerToml', () => {
  it('reads [types] and [metadata]; missing types are false', () => {
    expect(
      parseLayerToml('[types]\nlaunch = true\ncache = true\n[metadata]\nversion = "1"\n', 'x.toml'),
    ).toEqual({
      types: { launch: true, build: false, cache: true },
      metadata: { version: '1' },
    });
    expect(parseLayerToml('', 'x.toml')).toEqual({
      types: { launch: false, build: false, cache: false },
      metadata: {},
    });
  });
  it('rejects the pre-[types] top-level flags, naming file and field', () => {
    try {
      parseLayerToml('launch = true\n', '/layers/bp/node.toml');
      expect.unreachable();
    } catch (err) {
      expect(isPackfarmError(err, 'INVALID_LAYER_METADATA')).toBe(true);
      expect((err as Error).message).toContain('/layers/bp/node.toml');
      expect((err as Error).message).toContain('`launch`');
    }
  });
  it('rejects non-boolean types with the field path', () => {
    expect(() => parseLayerToml('[types]\nbuild = "yes"\n', '/l/a.toml')).toThrow(
      /\/l\/a\.toml.*types\.build/,
    );
  });
  it('restored metadata never carries [types]', () => {
    const text = encodeRestoredLayerToml({ version: '1.2' });
    expect(parseToml(text, 'x')).toEqual({ metadata: { version: '1.2' } });
  });
});

describe('layerExecEnv', () => {
  it('is only meaningful for Buildpack API 0.12+', () => {
    expect(layerExecEnv({ 'exec-env': ['test'] }, '0.12', 'x')).toEqual(['test']);
    expect(layerExecEnv({ 'exec-env': ['test'] }, '0.11', 'x')).toBeUndefined();
    expect(layerExecEnv({}, '0.12', 'x')).toBeUndefined();
    expect(() => layerExecEnv({ 'exec-env': 'test' }, '0.12', 'x.toml')).toThrow(
      /x\.toml: metadata\.exec-env/,
    );
  });
});

describe('escapeId', () => {
  it('escapes slashes', () => {
    expect(escapeId('samples/hello-world')).toBe('samples_hello-world');
  });
});

describe('readBuildpackLayers', () => {
  it('lists layers by toml, sorted, skipping launch/build/store.toml and dirs without toml', async () => {
    const fs = memfs({
      '/l/bp/zeta.toml': '[types]\nbuild = true\n',
      '/l/bp/zeta/bin/tool': '',
      '/l/bp/alpha.toml': '[types]\nlaunch = true\n',
      '/l/bp/launch.toml': '[[processes]]\ntype = "web"\ncommand = ["x"]\n',
      '/l/bp/build.toml': '',
      '/l/bp/store.toml': '[metadata]\n',
      '/l/bp/scratch/file': '',
      '/l/bp/web/exec.d/a': '',
      '/l/bp/web/exec.d/web/b': '',
      '/l/bp/web.toml': '[types]\nlaunch = true\n',
    });
    const layers = await readBuildpackLayers('/l/bp', { buildpackApi: '0.12', fs });
    expect(layers.map((l) => [l.name, l.hasDir, l.types])).toEqual([
      ['alpha', false, { launch: true, build: false, cache: false }],
      ['web', true, { launch: true, build: false, cache: false }],
      ['zeta', true, { launch: false, build: true, cache: false }],
    ]);
    expect(layers[1]?.execD).toEqual({ all: ['a'], byProcess: { web: ['b'] } });
  });
  it('a missing buildpack dir has no layers', async () => {
    expect(await readBuildpackLayers('/none', { buildpackApi: '0.12', fs: memfs({}) })).toEqual([]);
  });
});

describe('ignoreUntypedLayers', () => {
  let dir: string | undefined;
  afterEach(async () => {
    if (dir) await rm(dir, { recursive: true, force: true });
  });
  it('renames dirs of layers with all types false to <layer>.ignore', async () => {
    dir = await mkdtemp(join(tmpdir(), 'pf-layers-'));
    await mkdir(join(dir, 'tmp'));
    await writeFile(join(dir, 'tmp.toml'), '[metadata]\nx = 1\n');
    await mkdir(join(dir, 'kept'));
    await writeFile(join(dir, 'kept.toml'), '[types]\ncache = true\n');
    const layers = await readBuildpackLayers(dir, { buildpackApi: '0.12' });
    expect(await ignoreUntypedLayers(layers)).toEqual(['tmp']);
    expect((await readdir(dir)).sort()).toEqual(['kept', 'kept.toml', 'tmp.ignore', 'tmp.toml']);
  });
});
