import { describe, expect, it } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { checkSlicePaths, parseLaunchToml } from './launch.js';

const opts = (api: string) => ({
  source: '/layers/my_bp/launch.toml',
  buildpackId: 'my/bp',
  buildpackApi: api,
});

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected an error');
}

describe('parseLaunchToml', () => {
  it('reads processes, labels and slices for API 0.9+', () => {
    const text = `
[[labels]]
key = "k"
value = "v"

[[processes]]
type = "web"
command = ["node", "--enable-x"]
args = ["server.js"]
default = true
working-dir = "/workspace/sub"

[[processes]]
type = "worker"
command = ["bin/worker"]
exec-env = ["production"]

[[slices]]
paths = ["static/*", "/workspace/public"]
`;
    expect(parseLaunchToml(text, opts('0.12'))).toEqual({
      labels: [{ key: 'k', value: 'v' }],
      processes: [
        {
          type: 'web',
          command: ['node', '--enable-x'],
          args: ['server.js'],
          direct: true,
          default: true,
          workingDir: '/workspace/sub',
          execEnv: undefined,
        },
        {
          type: 'worker',
          command: ['bin/worker'],
          args: [],
          direct: true,
          default: false,
          workingDir: undefined,
          execEnv: ['production'],
        },
      ],
      slices: [{ paths: ['static/*', '/workspace/public'] }],
      bom: [],
    });
  });

  it('rejects `direct` for API 0.9+ naming file, buildpack and field', () => {
    const err = errorOf(() =>
      parseLaunchToml('[[processes]]\ntype = "web"\ncommand = ["x"]\ndirect = true\n', opts('0.9')),
    );
    expect(isPackfarmError(err, 'INVALID_LAUNCH_TOML')).toBe(true);
    expect(err.message).toContain('/layers/my_bp/launch.toml');
    expect(err.message).toContain('my/bp');
    expect(err.message).toContain('processes[0].direct');
  });

  it('requires a command array for API 0.9+', () => {
    const err = errorOf(() => parseLaunchToml('[[processes]]\ntype = "web"\ncommand = "x"\n', opts('0.10')));
    expect(err.message).toMatch(/processes\[0\]\.command/);
    expect(() => parseLaunchToml('[[processes]]\ntype = "web"\ncommand = []\n', opts('0.10'))).toThrow(
      /processes\[0\]\.command/,
    );
  });

  it('reads the pre-0.9 string command and direct flag', () => {
    const md = parseLaunchToml('[[processes]]\ntype = "web"\ncommand = "npm start"\n', opts('0.8'));
    expect(md.processes[0]).toMatchObject({ command: ['npm start'], direct: false, args: [] });
    const direct = parseLaunchToml(
      '[[processes]]\ntype = "web"\ncommand = "x"\ndirect = true\n',
      opts('0.8'),
    );
    expect(direct.processes[0]?.direct).toBe(true);
  });

  it('ignores working-dir before 0.8 and exec-env before 0.12, with a warning', () => {
    const warnings: string[] = [];
    const logger = { warn: (m: string) => warnings.push(m) } as unknown as Logger;
    const md = parseLaunchToml(
      '[[processes]]\ntype = "web"\ncommand = "x"\nworking-dir = "/w"\nexec-env = ["test"]\n',
      { ...opts('0.7'), logger },
    );
    expect(md.processes[0]).toMatchObject({ workingDir: undefined, execEnv: undefined });
    expect(warnings).toHaveLength(2);
  });

  it('rejects invalid process types, duplicate types, two defaults and duplicate label keys', () => {
    expect(() => parseLaunchToml('[[processes]]\ntype = "we/b"\ncommand = ["x"]\n', opts('0.12'))).toThrow(
      /processes\[0\]\.type/,
    );
    const dupType =
      '[[processes]]\ntype = "a"\ncommand = ["x"]\n[[processes]]\ntype = "a"\ncommand = ["y"]\n';
    expect(() => parseLaunchToml(dupType, opts('0.12'))).toThrow(/processes\[1\]\.type: duplicate/);
    const twoDefaults =
      '[[processes]]\ntype = "a"\ncommand = ["x"]\ndefault = true\n[[processes]]\ntype = "b"\ncommand = ["y"]\ndefault = true\n';
    expect(() => parseLaunchToml(twoDefaults, opts('0.12'))).toThrow(/processes\[1\]\.default/);
    const dupLabel = '[[labels]]\nkey = "k"\nvalue = "1"\n[[labels]]\nkey = "k"\nvalue = "2"\n';
    expect(() => parseLaunchToml(dupLabel, opts('0.12'))).toThrow(/labels\[1\]\.key/);
  });

  it('reports TOML syntax errors with the file name', () => {
    expect(() => parseLaunchToml('[[processes]\n', opts('0.12'))).toThrow(/launch\.toml.*not valid TOML/);
  });

  it('keeps legacy [[bom]] entries and rejects their top-level version', () => {
    expect(
      parseLaunchToml('[[bom]]\nname = "dep"\n[bom.metadata]\nversion = "1"\n', opts('0.6')).bom,
    ).toEqual([{ name: 'dep', metadata: { version: '1' } }]);
    expect(() => parseLaunchToml('[[bom]]\nname = "dep"\nversion = "1"\n', opts('0.6'))).toThrow(
      /bom\[0\]\.version/,
    );
  });
});

describe('checkSlicePaths', () => {
  it('accepts paths inside the app dir and rejects ones that escape it', () => {
    expect(checkSlicePaths([{ paths: ['a/*', '/workspace/b', './c'] }], '/workspace')).toBeUndefined();
    expect(checkSlicePaths([{ paths: ['../etc/*'] }], '/workspace')).toMatch(/slices\[0\]\.paths\[0\]/);
    expect(checkSlicePaths([{ paths: ['ok'] }, { paths: ['/etc/passwd'] }], '/workspace')).toMatch(
      /slices\[1\]\.paths\[0\]/,
    );
  });
});
