import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { compileSrcForChildProcesses } from '../../test/helpers/compiled-src.js';
import { buildDirKey, openBuildDirs } from './workdir.js';

let data: string;
beforeAll(async () => {
  data = await mkdtemp(join(tmpdir(), 'pf-workdir-'));
});
afterAll(async () => {
  await rm(data, { recursive: true, force: true });
});

describe('openBuildDirs', () => {
  it('keeps the workspace between builds of one image and platform, and empties the rest', async () => {
    const key = buildDirKey('oci:/x:app', 'linux/amd64');
    expect(key).not.toBe(buildDirKey('oci:/x:app', 'linux/arm64'));
    const a = await openBuildDirs({ key, dataDir: data });
    expect(a.persistent).toBe(true);
    await writeFile(join(a.app, 'kept'), '1');
    await writeFile(join(a.layers, 'gone'), '1');
    await a.release();
    const b = await openBuildDirs({ key, dataDir: data });
    expect(b.app).toBe(a.app);
    expect(await readdir(b.app)).toEqual(['kept']);
    expect(await readdir(b.layers)).toEqual([]);
    await b.release();
  });

  it('lets one build at a time hold the dirs; a dead owner’s lock is taken over', async () => {
    const key = buildDirKey('oci:/y:app', 'linux/amd64');
    const a = await openBuildDirs({ key, dataDir: data });
    await expect(openBuildDirs({ key, dataDir: data })).rejects.toThrow(/another build \(pid \d+\) is using/);
    await a.release();
    // A lock left by a process that no longer exists.
    const lock = join(data, 'builds', `${key}.lock`);
    await writeFile(lock, JSON.stringify({ pid: 999999999, host: hostname(), token: 'dead' }));
    const b = await openBuildDirs({ key, dataDir: data });
    await b.release();
    expect((await readdir(join(data, 'builds'))).filter((n) => n.includes('.lock'))).toEqual([]);
  });

  it('lets exactly one of several processes racing on a dead owner’s lock take it over', async () => {
    const compiled = await compileSrcForChildProcesses();
    try {
      // Several rounds: the old "see it dead, remove it, mkdir" let a slow racer remove a fast one's lock.
      for (let round = 0; round < 4; round++) {
        const key = buildDirKey('oci:/race:app', `round-${round}`);
        await mkdir(join(data, 'builds'), { recursive: true });
        await writeFile(
          join(data, 'builds', `${key}.lock`),
          JSON.stringify({ pid: 999999999, host: hostname(), token: `dead-${round}` }),
        );
        const outcomes = await race(compiled.dir, key, 6);
        expect(outcomes.filter((o) => o === 'won')).toHaveLength(1);
        expect(outcomes.filter((o) => o === 'BUILD_IN_PROGRESS')).toHaveLength(5);
      }
    } finally {
      await compiled.cleanup();
    }
  });

  it('uses a fresh temp dir with keepTemp, and leaves it', async () => {
    const d = await openBuildDirs({ key: 'k', dataDir: data, tmpDir: data, keepTemp: true });
    expect(d.persistent).toBe(false);
    await d.release();
    expect((await readdir(d.root)).sort()).toEqual(['layers', 'platform', 'scratch', 'workspace']);
  });
});

/**
 * Start `n` processes that each try to open the build dirs of `key` at the same moment (after all are
 * ready); a winner holds them until every racer has answered. Returns each one's outcome.
 */
async function race(srcDir: string, key: string, n: number): Promise<string[]> {
  const script = `
    const { openBuildDirs } = await import(${JSON.stringify(join(srcDir, 'api', 'workdir.js'))});
    const lines = (await import('node:readline')).createInterface({ input: process.stdin });
    let held;
    lines.on('line', async (line) => {
      if (line === 'go') {
        try {
          held = await openBuildDirs({ key: ${JSON.stringify(key)}, dataDir: ${JSON.stringify(data)} });
          console.log('won');
        } catch (err) {
          console.log(err.code ?? String(err));
        }
      } else if (line === 'end') {
        await held?.release();
        process.exit(0);
      }
    });
    console.log('ready');
  `;
  const children = Array.from({ length: n }, () =>
    spawn(process.execPath, ['--input-type=module', '-e', script], { stdio: ['pipe', 'pipe', 'inherit'] }),
  );
  const readers = children.map((c) => createInterface({ input: c.stdout })[Symbol.asyncIterator]());
  const next = async (i: number) => String((await readers[i]!.next()).value);
  for (let i = 0; i < n; i++) expect(await next(i)).toBe('ready');
  for (const c of children) c.stdin.write('go\n');
  const outcomes: string[] = [];
  for (let i = 0; i < n; i++) outcomes.push(await next(i));
  const exited = children.map((c) => new Promise((r) => c.on('exit', r)));
  for (const c of children) c.stdin.write('end\n');
  await Promise.all(exited);
  return outcomes;
}
