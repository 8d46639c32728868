import { chmod, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { launcherScript, processScript, shQuote } from './scripts.js';

// The generated scripts run under the host's /bin/sh (dash on Debian: a strict POSIX shell).
let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-scripts-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function script(name: string, text: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, text);
  await chmod(p, 0o755);
  return p;
}

describe('shQuote', () => {
  it('keeps any value literal', async () => {
    for (const v of ["it's", '$HOME', 'a b', '`x`', '"q"', '', 'plain']) {
      const { stdout } = await execa('sh', ['-c', `printf %s ${shQuote(v)}`]);
      expect(stdout).toBe(v);
    }
  });
});

describe('processScript', () => {
  it('sets env, changes dir, runs exec.d, and lets user args replace the defaults', async () => {
    const execd = await script('execd', `#!/bin/sh\necho 'FROM_EXECD = "x y"' >&3\necho "IGNORED = 1" >&3\n`);
    const p = await script(
      'web',
      processScript({
        type: 'web',
        buildpackId: 'bp',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: a shell parameter expansion, not a template
        command: ['sh', '-c', 'echo "$@|$A|$FROM_EXECD|${IGNORED:-none}|$(pwd)"', 'sh'],
        args: ['d1', 'd 2'],
        workingDir: dir,
        env: [['A', "it's"]],
        execD: [execd],
      }),
    );
    expect((await execa(p, [], { cwd: '/' })).stdout).toBe(`d1 d 2|it's|x y|none|${dir}`);
    expect((await execa(p, ['u'], { cwd: '/' })).stdout).toBe(`u|it's|x y|none|${dir}`);
  });

  it('stops when an exec.d program fails', async () => {
    const bad = await script('bad-execd', '#!/bin/sh\nexit 3\n');
    const p = await script(
      'w2',
      processScript({
        type: 'w2',
        buildpackId: 'bp',
        command: ['echo', 'ran'],
        args: [],
        workingDir: dir,
        env: [],
        execD: [bad],
      }),
    );
    const r = await execa(p, [], { reject: false });
    expect(r.exitCode).toBe(1);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('exec.d');
  });
});

describe('launcherScript', () => {
  it('runs the default type, CNB_PROCESS_TYPE, or the given command', async () => {
    const launcher = await script(
      'launcher',
      launcherScript({ defaultProcess: 'web', processTypes: ['web', 'worker'] }).replaceAll(
        '/cnb/process',
        dir,
      ),
    );
    await script('web', '#!/bin/sh\necho "web $*"\n');
    await script('worker', '#!/bin/sh\necho "worker $*"\n');
    expect((await execa(launcher, ['a'])).stdout).toBe('web a');
    expect((await execa(launcher, [], { env: { CNB_PROCESS_TYPE: 'worker' } })).stdout).toBe('worker ');
    const bad = await execa(launcher, [], { env: { CNB_PROCESS_TYPE: '../x' }, reject: false });
    expect(bad.exitCode).toBe(1);
    const none = await script(
      'launcher-none',
      launcherScript({ defaultProcess: undefined, processTypes: [] }),
    );
    expect((await execa(none, ['echo', 'direct'])).stdout).toBe('direct');
    expect((await execa(none, [], { reject: false })).exitCode).toBe(1);
  });
});
