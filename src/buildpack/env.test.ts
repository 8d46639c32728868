import { Volume } from 'memfs';
import { describe, expect, it } from 'vitest';
import {
  type EnvFs,
  type EnvVars,
  addBuildLayers,
  addLaunchLayers,
  applyAction,
  applyBuildConfigEnv,
  applyLayerEnvDirs,
  applyUserEnv,
  envToRecord,
  newBuildEnv,
  parseEnvFileName,
  readEnvDir,
} from './env.js';

const files = (o: Record<string, string>) =>
  Object.entries(o).map(([fileName, value]) => ({ fileName, value }));
const vars = (o: Record<string, string> = {}): EnvVars => new Map(Object.entries(o));
const memfs = (tree: Record<string, string | null>) => Volume.fromJSON(tree).promises as unknown as EnvFs;

describe('parseEnvFileName', () => {
  it('splits the name at the first dot and knows the suffixes', () => {
    expect(parseEnvFileName('FOO')).toEqual({ name: 'FOO', suffix: undefined });
    expect(parseEnvFileName('FOO.append')).toEqual({ name: 'FOO', suffix: 'append' });
    expect(parseEnvFileName('FOO.prepend')).toEqual({ name: 'FOO', suffix: 'prepend' });
    expect(parseEnvFileName('FOO.default')).toEqual({ name: 'FOO', suffix: 'default' });
    expect(parseEnvFileName('FOO.override')).toEqual({ name: 'FOO', suffix: 'override' });
    expect(parseEnvFileName('FOO.delim')).toEqual({ name: 'FOO', suffix: 'delim' });
  });
  it('ignores unknown suffixes and nameless files', () => {
    expect(parseEnvFileName('FOO.ignore')).toBeUndefined();
    expect(parseEnvFileName('FOO.append.x')).toBeUndefined();
    expect(parseEnvFileName('.hidden')).toBeUndefined();
  });
});

describe('applyLayerEnvDirs: suffix rules', () => {
  const apply = (
    start: Record<string, string>,
    dir: Record<string, string>,
    defaultAction = 'override' as const,
  ) => {
    const v = vars(start);
    applyLayerEnvDirs(v, [files(dir)], { defaultAction });
    return Object.fromEntries(v);
  };

  it('no suffix overrides for buildpack layers', () => {
    expect(apply({ A: 'old' }, { A: 'new' })).toEqual({ A: 'new' });
  });
  it('no suffix acts as default when asked (operator build-config)', () => {
    expect(apply({ A: 'old' }, { A: 'new' }, 'default' as never)).toEqual({ A: 'old' });
    expect(apply({}, { A: 'new' }, 'default' as never)).toEqual({ A: 'new' });
  });
  it('.override replaces', () => {
    expect(apply({ A: 'old' }, { 'A.override': 'new' })).toEqual({ A: 'new' });
  });
  it('.default only fills an unset or empty variable', () => {
    expect(apply({ A: 'old' }, { 'A.default': 'new' })).toEqual({ A: 'old' });
    expect(apply({ A: '' }, { 'A.default': 'new' })).toEqual({ A: 'new' });
    expect(apply({}, { 'A.default': 'new' })).toEqual({ A: 'new' });
  });
  it('.append concatenates without a delimiter unless .delim gives one', () => {
    expect(apply({ A: 'old' }, { 'A.append': 'new' })).toEqual({ A: 'oldnew' });
    expect(apply({ A: 'old' }, { 'A.append': 'new', 'A.delim': '[]' })).toEqual({ A: 'old[]new' });
  });
  it('.prepend concatenates in front without a delimiter unless .delim gives one', () => {
    expect(apply({ A: 'old' }, { 'A.prepend': 'new' })).toEqual({ A: 'newold' });
    expect(apply({ A: 'old' }, { 'A.prepend': 'new', 'A.delim': ':' })).toEqual({ A: 'new:old' });
  });
  it('append/prepend to an empty variable add no delimiter', () => {
    expect(apply({}, { 'A.append': 'x', 'A.delim': ':' })).toEqual({ A: 'x' });
    expect(apply({}, { 'B.prepend': 'y', 'B.delim': ':' })).toEqual({ B: 'y' });
  });
  it('keeps file contents byte for byte (no trimming)', () => {
    expect(apply({}, { A: '  spaced value\n' })).toEqual({ A: '  spaced value\n' });
  });
  it('ignores unknown suffixes and does not set .delim files as variables', () => {
    expect(apply({}, { 'A.weird': 'x', 'B.delim': ':' })).toEqual({});
  });
  it('a delimiter from another dir of the same layer applies; the same dir wins', () => {
    const v = vars({ A: 'a', B: 'b' });
    applyLayerEnvDirs(
      v,
      [
        files({ 'A.delim': ',', 'B.delim': ',' }),
        files({ 'A.append': '1', 'B.append': '2', 'B.delim': ';' }),
      ],
      {
        defaultAction: 'override',
      },
    );
    expect(Object.fromEntries(v)).toEqual({ A: 'a,1', B: 'b;2' });
  });
});

describe('ordering across layers and buildpacks', () => {
  // Each layer is applied after the previous one, so these orderings fall out of applying in sequence:
  // earlier buildpacks/layers first; env/ then env.build|env.launch then env.launch/<proc>.
  const run = (layers: Record<string, string>[][]) => {
    const v = vars({ V: 'base' });
    for (const l of layers) applyLayerEnvDirs(v, l.map(files), { defaultAction: 'override' });
    return v.get('V');
  };
  it('append: earlier layers first; within a layer env before env.build', () => {
    expect(
      run([
        [{ 'V.append': '1', 'V.delim': ':' }],
        [{ 'V.append': '2', 'V.delim': ':' }, { 'V.append': '3' }],
      ]),
    ).toBe('base:1:2:3');
  });
  it('prepend: later layers first; within a layer env.build before env', () => {
    expect(
      run([
        [{ 'V.prepend': '1', 'V.delim': ':' }],
        [{ 'V.prepend': '2', 'V.delim': ':' }, { 'V.prepend': '3' }],
      ]),
    ).toBe('3:2:1:base');
  });
  it('override: the last layer wins; env.build beats env', () => {
    expect(run([[{ V: '1' }], [{ V: '2' }, { 'V.override': '3' }]])).toBe('3');
  });
  it('default: the first layer wins; env beats env.build', () => {
    const v = vars();
    applyLayerEnvDirs(v, [files({ 'V.default': '1' }), files({ 'V.default': '2' })], {
      defaultAction: 'override',
    });
    applyLayerEnvDirs(v, [files({ 'V.default': '3' })], { defaultAction: 'override' });
    expect(v.get('V')).toBe('1');
  });
});

describe('newBuildEnv', () => {
  it('keeps only the allowlist and POSIX path variables', () => {
    const env = newBuildEnv({
      HOME: '/home/cnb',
      PATH: '/usr/bin',
      LD_LIBRARY_PATH: '/lib',
      http_proxy: 'http://proxy',
      CNB_STACK_ID: 'stack',
      SECRET_TOKEN: 'nope',
      BP_FOO: 'user vars come from platform/env only',
      UNSET: undefined,
    });
    expect(Object.fromEntries(env)).toEqual({
      HOME: '/home/cnb',
      PATH: '/usr/bin',
      LD_LIBRARY_PATH: '/lib',
      http_proxy: 'http://proxy',
      CNB_STACK_ID: 'stack',
    });
  });
});

describe('applyUserEnv', () => {
  it('prepends path variables with ":" and overrides the rest; file names are taken literally', () => {
    const v = vars({ PATH: '/layer/bin:/usr/bin', FOO: 'bp' });
    applyUserEnv(v, files({ PATH: '/user/bin', FOO: 'user', 'BAR.append': 'literal' }));
    expect(Object.fromEntries(v)).toEqual({
      PATH: '/user/bin:/layer/bin:/usr/bin',
      FOO: 'user',
      'BAR.append': 'literal',
    });
  });
});

describe('applyBuildConfigEnv', () => {
  it('applies suffixes and treats unsuffixed files as default', () => {
    const v = vars({ A: 'bp', C: 'x' });
    applyBuildConfigEnv(v, files({ A: 'op', B: 'op', 'C.append': 'y', 'C.delim': '-' }));
    expect(Object.fromEntries(v)).toEqual({ A: 'bp', B: 'op', C: 'x-y' });
  });
});

describe('applyAction', () => {
  it('applies each action', () => {
    const v = vars({ X: 'a' });
    applyAction(v, 'X', 'append', 'b', '|');
    applyAction(v, 'X', 'prepend', 'c', '|');
    expect(v.get('X')).toBe('c|a|b');
  });
});

describe('readEnvDir', () => {
  it('reads regular files in name order, skips directories, missing dir is empty', async () => {
    const fs = memfs({ '/l/env/B': 'b', '/l/env/A.append': 'a', '/l/env/sub/C': 'c' });
    expect(await readEnvDir('/l/env', fs)).toEqual([
      { fileName: 'A.append', value: 'a' },
      { fileName: 'B', value: 'b' },
    ]);
    expect(await readEnvDir('/nope', fs)).toEqual([]);
  });
});

describe('addBuildLayers / addLaunchLayers', () => {
  it('prepends root dirs of one buildpack as an ascending block, later buildpacks in front', async () => {
    const fs = memfs({
      '/layers/bp1/a/bin/x': '',
      '/layers/bp1/b/bin/x': '',
      '/layers/bp1/b/lib/x': '',
      '/layers/bp1/b/include/x': '',
      '/layers/bp1/b/pkgconfig/x': '',
      '/layers/bp2/z/bin/x': '',
    });
    const v = vars({ PATH: '/usr/bin' });
    await addBuildLayers(v, ['/layers/bp1/a', '/layers/bp1/b'], fs);
    await addBuildLayers(v, ['/layers/bp2/z'], fs);
    expect(envToRecord(v)).toEqual({
      PATH: '/layers/bp2/z/bin:/layers/bp1/a/bin:/layers/bp1/b/bin:/usr/bin',
      LD_LIBRARY_PATH: '/layers/bp1/b/lib',
      LIBRARY_PATH: '/layers/bp1/b/lib',
      CPATH: '/layers/bp1/b/include',
      PKG_CONFIG_PATH: '/layers/bp1/b/pkgconfig',
    });
  });

  it('build layers apply env/ then env.build/, never env.launch/', async () => {
    const fs = memfs({
      '/layers/bp/a/env/V': 'env',
      '/layers/bp/a/env.build/V.append': '+build',
      '/layers/bp/a/env.launch/V.append': '+launch',
    });
    const v = vars();
    await addBuildLayers(v, ['/layers/bp/a'], fs);
    expect(v.get('V')).toBe('env+build');
  });

  it('launch layers apply env/, env.launch/ and env.launch/<process>/, only bin and lib on paths', async () => {
    const fs = memfs({
      '/layers/bp/a/bin/x': '',
      '/layers/bp/a/include/x': '',
      '/layers/bp/a/env/V': 'env',
      '/layers/bp/a/env.build/V.append': '+build',
      '/layers/bp/a/env.launch/V.append': '+launch',
      '/layers/bp/a/env.launch/web/V.append': '+web',
    });
    const web = vars();
    await addLaunchLayers(web, ['/layers/bp/a'], 'web', fs);
    expect(envToRecord(web)).toEqual({ PATH: '/layers/bp/a/bin', V: 'env+launch+web' });
    const other = vars();
    await addLaunchLayers(other, ['/layers/bp/a'], undefined, fs);
    expect(other.get('V')).toBe('env+launch');
  });
});
