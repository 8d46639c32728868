import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseToml } from '../../src/util/toml.js';

/**
 * buildpacks/procfile run as a lifecycle runs it (working directory = app, CNB_LAYERS_DIR set), once under
 * Debian's /bin/sh (dash) and once under busybox sh, so it stays POSIX: Procfile lines → launch.toml processes.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bp = join(repoRoot, 'buildpacks', 'procfile');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-procfile-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

let n = 0;
async function workspace(procfile?: string): Promise<{ app: string; layers: string }> {
  const dir = join(root, `w${++n}`);
  const ws = { app: join(dir, 'app'), layers: join(dir, 'layers') };
  await mkdir(ws.app, { recursive: true });
  await mkdir(ws.layers, { recursive: true });
  if (procfile !== undefined) await writeFile(join(ws.app, 'Procfile'), procfile);
  return ws;
}

interface Process {
  type: string;
  command: string[];
  default: boolean;
}

const shells: Array<[string, string[]]> = [
  ['/bin/sh (dash)', ['/bin/sh']],
  ['busybox sh', ['/bin/busybox', 'sh']],
];

describe.each(shells)('procfile buildpack under %s', (_name, shell) => {
  const phase = (script: 'detect' | 'build', ws: { app: string; layers: string }) =>
    execa(shell[0] as string, [...shell.slice(1), join(bp, 'bin', script)], {
      cwd: ws.app,
      env: { PATH: '/usr/bin:/bin', CNB_LAYERS_DIR: ws.layers, CNB_PLATFORM_DIR: join(ws.app, '..') },
      extendEnv: false,
      reject: false,
    });
  const processes = async (layers: string): Promise<Process[]> =>
    parseToml(await readFile(join(layers, 'launch.toml'), 'utf8'), 'launch.toml').processes as Process[];

  it('detect passes with a Procfile and answers 100 without one', async () => {
    expect((await phase('detect', await workspace('web: x\n'))).exitCode).toBe(0);
    const none = await phase('detect', await workspace());
    expect(none.exitCode).toBe(100);
  });

  it('turns each line into a process run by sh -c; web is the default', async () => {
    const ws = await workspace(
      [
        '# comment',
        '',
        '   ',
        'worker: echo "a\\b" | tr a b',
        '  web :./hello.sh --port "$PORT"\r',
        '\t# indented comment',
        'release.task_1:\tsleep 1\tdone',
        'no-newline-at-end: env',
      ].join('\n'),
    );
    const r = await phase('build', ws);
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(await processes(ws.layers)).toEqual([
      { type: 'worker', command: ['sh', '-c', 'echo "a\\b" | tr a b'], default: false },
      { type: 'web', command: ['sh', '-c', './hello.sh --port "$PORT"'], default: true },
      { type: 'release.task_1', command: ['sh', '-c', 'sleep 1\tdone'], default: false },
      { type: 'no-newline-at-end', command: ['sh', '-c', 'env'], default: false },
    ]);
    expect(r.stdout).toContain('process web (default): ./hello.sh --port "$PORT"');
    expect(r.stdout).toContain('process worker: echo "a\\b" | tr a b');
  });

  it('needs nothing but the shell: with no sed, tr or cat on PATH the commands are written whole', async () => {
    // A build image may have /bin/sh and little else: PATH points at an empty directory.
    const ws = await workspace('web: echo "a\\b"\tdone\nworker: printf \'%s\' x\n');
    const empty = join(root, 'empty-bin');
    await mkdir(empty, { recursive: true });
    const r = await execa(shell[0] as string, [...shell.slice(1), join(bp, 'bin', 'build')], {
      cwd: ws.app,
      env: { PATH: empty, CNB_LAYERS_DIR: ws.layers },
      extendEnv: false,
      reject: false,
    });
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(await processes(ws.layers)).toEqual([
      { type: 'web', command: ['sh', '-c', 'echo "a\\b"\tdone'], default: true },
      { type: 'worker', command: ['sh', '-c', "printf '%s' x"], default: false },
    ]);
  });

  it('makes the first process the default when there is no web', async () => {
    const ws = await workspace('main: ./run\nhelper: ./help\n');
    expect((await phase('build', ws)).exitCode).toBe(0);
    expect((await processes(ws.layers)).map((p) => [p.type, p.default])).toEqual([
      ['main', true],
      ['helper', false],
    ]);
  });

  it.each([
    ['web: ok\nthis line has no colon\n', "line 2: expected 'type: command', got 'this line has no colon'"],
    ['web app: ./x\n', "line 1: process type 'web app' must be letters, digits"],
    [': ./x\n', "line 1: process type '' must be letters, digits"],
    ['web:   \n', "line 1: process type 'web' has no command"],
    ['web: a\nweb: b\n', "line 2: process type 'web' is declared twice"],
    ['web: a\u0001b\n', "line 1: the command of 'web' contains a control character"],
    ['# nothing but comments\n\n', 'declares no processes'],
  ])('rejects %j with a clear message and exit 1', async (procfile, message) => {
    const ws = await workspace(procfile);
    const r = await phase('build', ws);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`procfile buildpack: Procfile: ${message}`);
  });

  it('fails clearly when run without a lifecycle', async () => {
    const ws = await workspace('web: x\n');
    const r = await execa(shell[0] as string, [...shell.slice(1), join(bp, 'bin', 'build')], {
      cwd: ws.app,
      env: { PATH: '/usr/bin:/bin' },
      extendEnv: false,
      reject: false,
    });
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('CNB_LAYERS_DIR is not set');
  });
});
