import { mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { collectUserEnv, parseEnvAssignment, parseEnvFileText, writePlatformEnv } from './env-files.js';

describe('parseEnvAssignment', () => {
  it('splits at the first "=" and keeps the rest verbatim', () => {
    expect(parseEnvAssignment('A=b=c ', {})).toEqual(['A', 'b=c ']);
    expect(parseEnvAssignment('A=', {})).toEqual(['A', '']);
  });
  it('takes a bare name from the host env, or skips it', () => {
    expect(parseEnvAssignment('HOME', { HOME: '/root' })).toEqual(['HOME', '/root']);
    expect(parseEnvAssignment('NOPE', {})).toBeUndefined();
  });
  it('rejects names that cannot be files or env keys', () => {
    expect(() => parseEnvAssignment('=x', {})).toThrow(/invalid environment variable name/);
    expect(() => parseEnvAssignment('a/b=x', {})).toThrow(/invalid/);
  });
});

describe('parseEnvFileText', () => {
  it('skips blanks and comments, trims lines', () => {
    expect(parseEnvFileText('# c\n\n  A=1  \nB=two words\r\nHOST\n', 'f.env', { HOST: 'h' })).toEqual([
      ['A', '1'],
      ['B', 'two words'],
      ['HOST', 'h'],
    ]);
  });
  it('names file and line on errors', () => {
    expect(() => parseEnvFileText('A=1\n=2\n', 'f.env', {})).toThrow(/f\.env:2/);
  });
});

describe('collectUserEnv / writePlatformEnv', () => {
  let dir: string;
  beforeEach(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pf-envfiles-'));
  });
  afterEach(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('project < env files < flags', async () => {
    await writeFile(join(dir, 'a.env'), 'A=file\nB=file\n');
    const env = await collectUserEnv({
      project: [
        { name: 'A', value: 'project' },
        { name: 'P', value: 'project' },
      ],
      envFiles: [join(dir, 'a.env')],
      envFlags: ['B=flag'],
      hostEnv: {},
    });
    expect(Object.fromEntries(env)).toEqual({ A: 'file', P: 'project', B: 'flag' });
  });

  it('writes one file per variable with the exact value; replace removes stale ones', async () => {
    const platform = join(dir, 'platform');
    await mkdir(join(platform, 'env'), { recursive: true });
    await writeFile(join(platform, 'env', 'STALE'), 'x');
    await writePlatformEnv(platform, new Map([['GREETING', 'hello \nworld']]), { replace: true });
    expect(await readdir(join(platform, 'env'))).toEqual(['GREETING']);
    expect(await readFile(join(platform, 'env', 'GREETING'), 'utf8')).toBe('hello \nworld');
  });
});
