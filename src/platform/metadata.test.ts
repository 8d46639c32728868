import { describe, expect, it } from 'vitest';
import { parseToml } from '../util/toml.js';
import { type BuildMetadata, encodeBuildMetadata, parseBuildMetadata } from './metadata.js';

const md: BuildMetadata = {
  buildpacks: [
    { id: 'a/one', version: '1.0.0', api: '0.12', homepage: 'https://x' },
    { id: 'b', version: '0.1.0', api: '0.9' },
  ],
  extensions: [],
  processes: [
    {
      type: 'web',
      command: ['node', '--x'],
      args: ['server.js'],
      direct: true,
      workingDir: undefined,
      execEnv: undefined,
      buildpackId: 'a/one',
    },
    {
      type: 'test',
      command: ['npm'],
      args: ['test'],
      direct: true,
      workingDir: '/workspace/t',
      execEnv: ['test'],
      buildpackId: 'b',
    },
  ],
  slices: [{ paths: ['static/*'] }],
  labels: [{ key: 'k', value: 'v' }],
  buildpackDefaultProcessType: 'web',
  bom: [],
};

describe('metadata.toml', () => {
  it('writes command arrays and explicit exec-env for Platform API 0.15 and reads them back', () => {
    const text = encodeBuildMetadata(md, '0.15');
    const raw = parseToml(text, 'metadata.toml') as { processes: Record<string, unknown>[] };
    expect(raw.processes[0]).toEqual({
      type: 'web',
      command: ['node', '--x'],
      args: ['server.js'],
      direct: true,
      'buildpack-id': 'a/one',
      'exec-env': ['*'],
    });
    expect(raw.processes[1]?.['working-dir']).toBe('/workspace/t');
    const back = parseBuildMetadata(text, 'metadata.toml');
    expect(back.buildpacks).toEqual(md.buildpacks);
    expect(back.processes[0]?.execEnv).toEqual(['*']);
    expect(back.processes[1]).toEqual(md.processes[1]);
    expect(back.buildpackDefaultProcessType).toBe('web');
    expect(back.slices).toEqual(md.slices);
    expect(back.labels).toEqual(md.labels);
  });

  it('leaves exec-env out before Platform API 0.15 when unrestricted', () => {
    const raw = parseToml(encodeBuildMetadata(md, '0.12'), 'm') as { processes: Record<string, unknown>[] };
    expect(raw.processes[0]).not.toHaveProperty('exec-env');
  });

  it('before Platform API 0.10 writes the command as a string and moves fixed args into args', () => {
    const raw = parseToml(encodeBuildMetadata(md, '0.9'), 'm') as { processes: Record<string, unknown>[] };
    expect(raw.processes[0]?.command).toBe('node');
    expect(raw.processes[0]?.args).toEqual(['--x', 'server.js']);
    expect(parseBuildMetadata(encodeBuildMetadata(md, '0.9'), 'm').processes[0]?.command).toEqual(['node']);
  });

  it('rejects malformed files naming the field', () => {
    expect(() => parseBuildMetadata('[[processes]]\ntype = "web"\n', '/layers/config/metadata.toml')).toThrow(
      /metadata\.toml.*processes\[0\]\.command/,
    );
  });
});
