import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { type IncomingMessage, type Server, createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { writeTestImage } from '../helpers/images.js';
import { startRegistry } from '../helpers/registry.js';
import { createRunImage } from '../helpers/run-image.js';

/**
 * packfarm as a real process (bin/packfarm.js, run through its #! line as an installed `packfarm` is):
 * interrupted by SIGINT/SIGTERM it stops the buildpack's whole process group, says it was interrupted and
 * exits 130/143; and its own `--env-file` reaches it instead of Node.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = join(repoRoot, 'bin', 'packfarm.js');

let root: string;
let runImage: string;
beforeAll(async () => {
  // Build dist/ from the current sources; tsc emits even when other parts of the tree do not type-check.
  const tsc = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: repoRoot, encoding: 'utf8' });
  if (!existsSync(join(repoRoot, 'dist', 'cli', 'main.js')))
    throw new Error(`building dist/ failed:\n${tsc.stdout}\n${tsc.stderr}`);
  root = await mkdtemp(join(tmpdir(), 'packfarm-interrupt-'));
  const runDir = join(root, 'run');
  await createRunImage({ store: await openLayoutStore(runDir, { create: true }), tag: 'latest' });
  runImage = `oci:${runDir}:latest`;
}, 180_000);
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Proc {
  child: ChildProcess;
  out: () => string;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

function packfarm(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  // Executed directly, not through `node bin/packfarm.js`: the #! line is part of what is tested.
  const child = spawn(bin, args, {
    cwd: root,
    env: { PATH: process.env.PATH, HOME: root, PACKFARM_HOME: join(root, 'home'), ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout?.on('data', (c) => {
    out += c;
  });
  child.stderr?.on('data', (c) => {
    out += c;
  });
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('close', (code, signal) => r({ code, signal })),
  );
  return { child, out: () => out, done };
}

/** A buildpack whose bin/build starts a background process and then waits; both write their pids. */
async function sleeperBuildpack(pids: string): Promise<string> {
  const dir = join(root, `sleeper-${Math.random().toString(36).slice(2)}`);
  await mkdir(join(dir, 'bin'), { recursive: true });
  await writeFile(
    join(dir, 'buildpack.toml'),
    'api = "0.10"\n[buildpack]\nid = "test/sleeper"\nversion = "1.0.0"\n[[stacks]]\nid = "*"\n',
  );
  await writeFile(join(dir, 'bin', 'detect'), '#!/bin/sh\nexit 0\n');
  await writeFile(
    join(dir, 'bin', 'build'),
    `#!/bin/sh\nsleep 300 &\necho $! > ${pids}/background\necho $$ > ${pids}/build\nsleep 300\n`,
  );
  await chmod(join(dir, 'bin', 'detect'), 0o755);
  await chmod(join(dir, 'bin', 'build'), 0o755);
  return dir;
}

function running(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie waiting for its reaper has ended.
  return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
}

async function ends(pid: number): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (!running(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

async function pidsOnceWritten(dir: string, proc: Proc): Promise<number[]> {
  for (;;) {
    const names: string[] = await readdir(dir).catch(() => []);
    if (names.includes('background') && names.includes('build')) {
      const pids = await Promise.all(names.map((n) => readFile(join(dir, n), 'utf8')));
      if (pids.every((p) => p.endsWith('\n'))) return pids.map((p) => Number(p.trim()));
    }
    if (proc.child.exitCode !== null) throw new Error(`packfarm ended early:\n${proc.out()}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

describe('an interrupted packfarm', () => {
  it.each([
    ['SIGTERM', 143],
    ['SIGINT', 130],
  ] as const)('build: %s stops the buildpack process group and exits %i', async (signal, code) => {
    const pids = await mkdtemp(join(root, 'pids-'));
    const bp = await sleeperBuildpack(pids);
    const app = join(root, `app-${signal}`);
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'hello.txt'), 'hi\n');
    const proc = packfarm([
      'build',
      `oci:${join(root, `out-${signal}`)}:app`,
      '--path',
      app,
      '--buildpack',
      bp,
      '--run-image',
      runImage,
    ]);
    const started = await pidsOnceWritten(pids, proc);
    for (const pid of started) expect(running(pid)).toBe(true);
    proc.child.kill(signal);
    const result = await proc.done;
    expect(result.code, proc.out()).toBe(code);
    expect(proc.out()).toContain(`interrupted by ${signal}`);
    expect(proc.out()).not.toMatch(/internal error/);
    for (const pid of started) expect(await ends(pid)).toBe(true);
    // The build dir lock is released: the next build of the image may start.
    const builds = join(root, 'home', 'builds');
    expect((await readdir(builds)).filter((n) => n.includes('.lock'))).toEqual([]);
  });
});

describe('--env-file', () => {
  it('reaches packfarm (not Node): a missing file is ENV_FILE_UNREADABLE naming it', async () => {
    const app = join(root, 'app-env');
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'hello.txt'), 'hi\n');
    const proc = packfarm([
      'build',
      `oci:${join(root, 'out-env')}:app`,
      '--path',
      app,
      '--buildpack',
      join(repoRoot, 'buildpacks', 'procfile'),
      '--run-image',
      runImage,
      '--env-file',
      'MISSING',
    ]);
    const result = await proc.done;
    expect(proc.out()).not.toMatch(/^node:/m);
    expect(proc.out()).toContain(`${join(root, 'MISSING')}: cannot read env file`);
    expect(result.code).toBe(1);
  });
});

/**
 * A proxy in front of a registry that takes the first blob upload with a body, reads it, and never answers
 * it (a registry gone slow mid-push); everything else passes through. `held` resolves once it holds one.
 */
async function holdingProxy(target: string) {
  const seen: Array<{ method: string; path: string }> = [];
  let hold: () => void = () => {};
  const held = new Promise<void>((r) => {
    hold = r;
  });
  let holding = false;
  const server: Server = createServer((req: IncomingMessage, res) => {
    seen.push({ method: req.method ?? '', path: req.url ?? '' });
    const upload =
      (req.method === 'PUT' || req.method === 'PATCH') && /\/blobs\/uploads\//.test(req.url ?? '');
    if (upload && !holding && Number(req.headers['content-length'] ?? 1) > 0) {
      holding = true;
      req.resume();
      req.on('end', hold);
      return;
    }
    const [host, port] = target.split(':');
    const up = httpRequest(
      { host, port: Number(port), method: req.method, path: req.url, headers: req.headers },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    held,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('an interrupted manifest push', () => {
  it.each([
    ['SIGINT', 130],
    ['SIGTERM', 143],
  ] as const)(
    '%s mid-upload: stops at once, exits %i, deletes the upload session, writes no tag',
    async (signal, code) => {
      const registry = await startRegistry({ proxy: false });
      const proxy = await holdingProxy(registry.directHost);
      try {
        const layout = join(root, `push-src-${signal}`);
        const store = await openLayoutStore(layout, { create: true });
        await writeTestImage(store, { platform: 'linux/amd64', tag: 'amd64', layers: [{ 'a.txt': 'a\n' }] });
        await writeTestImage(store, { platform: 'linux/arm64', tag: 'arm64', layers: [{ 'b.txt': 'b\n' }] });
        const list = `list-${signal.toLowerCase()}`;
        const made = packfarm(['manifest', 'create', list, `oci:${layout}:amd64`, `oci:${layout}:arm64`]);
        expect((await made.done).code, made.out()).toBe(0);

        // A slow registry: the push waits on an upload it will never get an answer to (the headers timeout is
        // far away), and the signal arrives then.
        // One transfer at a time, so the held upload is the only request in flight when the signal comes.
        const proc = packfarm(['manifest', 'push', list, `${proxy.host}/app:v1`, '--concurrency', '1'], {
          PACKFARM_REGISTRY_HEADERS_TIMEOUT: '600',
        });
        await Promise.race([
          proxy.held,
          proc.done.then(() => {
            throw new Error(`packfarm ended before the upload was held:\n${proc.out()}`);
          }),
        ]);
        const before = proxy.seen.length;
        proc.child.kill(signal);
        const result = await proc.done;
        expect(result.code, proc.out()).toBe(code);
        expect(proc.out()).toContain(`interrupted by ${signal}`);
        expect(proc.out()).not.toMatch(/internal error/);

        // After the signal: nothing but deleting the open upload session (no retry, no other transfer).
        const after = proxy.seen.slice(before);
        expect(after.length, JSON.stringify(after)).toBeGreaterThan(0);
        expect(
          after.every((r) => r.method === 'DELETE' && r.path.includes('/blobs/uploads/')),
          JSON.stringify(after),
        ).toBe(true);
        // The upload session was cancelled: the registry no longer knows it (distribution keeps only a
        // stray hash state file of a cancelled session on disk), and no tag was written.
        for (const r of after) {
          const status = await fetch(`http://${registry.directHost}${r.path}`);
          expect(status.status).toBe(404);
        }
        const tag = await fetch(`http://${registry.directHost}/v2/app/manifests/v1`, { method: 'HEAD' });
        expect(tag.status).toBe(404);
      } finally {
        await proxy.close();
        await registry.stop();
      }
    },
    // Without a prompt stop the push would wait out the 600 s headers timeout.
    60_000,
  );
});
