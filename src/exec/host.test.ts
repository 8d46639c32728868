import { chmod, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import { HOST_ENV_ALLOWLIST, pickHostEnv } from './env.js';
import { createHostExecutor } from './host.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'hostexec-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

const exec = createHostExecutor({ killGraceMs: 200 });

describe('host executor', () => {
  it('gives exactly the env it is told, runs in cwd, passes argv without a shell', async () => {
    const r = await exec.run({
      argv: [
        '/bin/sh',
        '-c',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: shell parameter expansion, not a JS template
        'echo "$0|$1|$FOO|${HOME-unset}|$(pwd)"; echo err >&2; exit 7',
        'a b',
        '$NOT_EXPANDED',
      ],
      cwd: dir,
      env: { FOO: 'bar' },
      capture: true,
    });
    expect(r.exitCode).toBe(7);
    expect(r.stdout).toBe(`a b|$NOT_EXPANDED|bar|unset|${dir}\n`);
    expect(r.stderr).toBe('err\n');
  });

  it('streams chunks, feeds stdin', async () => {
    const chunks: string[] = [];
    const r = await exec.run({
      argv: ['/bin/cat'],
      cwd: dir,
      env: {},
      stdin: 'hello',
      onStdout: (c) => chunks.push(c.toString()),
    });
    expect(r.exitCode).toBe(0);
    expect(chunks.join('')).toBe('hello');
    expect(r.stdout).toBeUndefined();
  });

  it('reports a signal death as 128 + signal number', async () => {
    const r = await exec.run({ argv: ['/bin/sh', '-c', 'kill -KILL $$'], cwd: dir, env: {} });
    expect(r.signal).toBe('SIGKILL');
    expect(r.exitCode).toBe(137);
  });

  it('terminates on timeout and on abort', async () => {
    const t = await exec.run({ argv: ['/bin/sleep', '30'], cwd: dir, env: {}, timeoutMs: 50 });
    expect(t.timedOut).toBe(true);
    expect(t.signal).toBe('SIGTERM');
    const ac = new AbortController();
    const p = exec.run({ argv: ['/bin/sleep', '30'], cwd: dir, env: {}, signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    const a = await p;
    expect(a.aborted).toBe(true);
  });

  it('terminates the whole process group on abort: nothing the process started survives it', async () => {
    const pidFile = join(dir, 'bg-abort.pid');
    const ac = new AbortController();
    const run = exec.run({
      argv: ['/bin/sh', '-c', `sleep 300 & echo $! > ${pidFile}; sleep 300`],
      cwd: dir,
      env: {},
      signal: ac.signal,
      onStdout: () => {},
    });
    const bg = await waitForPid(pidFile);
    expect(alive(bg)).toBe(true);
    ac.abort();
    expect((await run).aborted).toBe(true);
    expect(await ends(bg)).toBe(true);
  });

  it('ends what a finished process left running, even when it holds the output open', async () => {
    const pidFile = join(dir, 'bg-left.pid');
    // The background sleep inherits stdout: without ending it, the run would wait for it.
    const r = await exec.run({
      argv: ['/bin/sh', '-c', `sleep 300 & echo $! > ${pidFile}; exit 3`],
      cwd: dir,
      env: {},
      capture: true,
    });
    expect(r.exitCode).toBe(3);
    expect(await ends(Number(await readFile(pidFile, 'utf8')))).toBe(true);
  });

  it('fails with a PackfarmError naming the file when it cannot start the process', async () => {
    const noexec = join(dir, 'noexec');
    await writeFile(noexec, '#!/bin/sh\nexit 0\n');
    await chmod(noexec, 0o644);
    const badInterp = join(dir, 'badinterp');
    await writeFile(badInterp, '#!/nonexistent/interpreter\n');
    await chmod(badInterp, 0o755);
    const cases: [string[], string, RegExp][] = [
      [[join(dir, 'missing')], dir, /cannot run .*missing: no such file/],
      [[noexec], dir, /cannot run .*noexec: permission denied \(is it executable\?\)/],
      [[badInterp], dir, /cannot run .*badinterp: its interpreter \(#! line\) was not found/],
      [['/bin/true'], join(dir, 'nodir'), /working directory .*nodir does not exist/],
    ];
    for (const [argv, cwd, re] of cases) {
      try {
        await exec.run({ argv, cwd, env: {} });
        expect.unreachable();
      } catch (err) {
        expect(isPackfarmError(err, 'EXEC_FAILED')).toBe(true);
        expect((err as Error).message).toMatch(re);
      }
    }
  });
});

describe('pickHostEnv', () => {
  it('keeps only the allowlisted variables', () => {
    expect(HOST_ENV_ALLOWLIST).toContain('PATH');
    expect(
      pickHostEnv({ PATH: '/bin', HOME: '/root', SECRET: 'x', https_proxy: 'p', CNB_PLATFORM_API: '0.15' }),
    ).toEqual({
      PATH: '/bin',
      HOME: '/root',
      https_proxy: 'p',
    });
  });
});

/** Whether a process runs (a zombie waiting for its reaper counts as ended). */
function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

/** Whether the process ends within a few seconds (a killed process takes a moment to be gone). */
async function ends(pid: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (!alive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function waitForPid(file: string): Promise<number> {
  for (;;) {
    const text = await readFile(file, 'utf8').catch(() => '');
    if (text.endsWith('\n')) return Number(text.trim());
    await new Promise((r) => setTimeout(r, 20));
  }
}
