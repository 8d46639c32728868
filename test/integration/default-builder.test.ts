import { appendFile, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultBuilderLocation } from '../../src/builder/default-builder.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { runCli, usePackfarmHome } from '../helpers/cli.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner } from '../helpers/run-image.js';

/**
 * End to end with the default builder (builders/default): `packfarm build` with no --builder and no
 * --buildpack makes the builder on first use (Debian bases for amd64 and arm64 from deb.debian.org, the
 * shipped buildpacks), builds examples/node-hello for linux/amd64 and linux/arm64 (arm64 through qemu), and
 * podman runs both. Node.js comes from the npm registry. The data dir (default builder, .debs) and the build
 * cache live in a reused temp dir so later runs download nothing; the assertions on rebuilds are on the Node.js
 * buildpack's own output lines.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CACHE = join(tmpdir(), 'packfarm-test-default-builder');

let root: string;
let app: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let restoreHome: (() => void) | undefined;

const image = () => `${registry.host}/node-hello:latest`;

async function build(platforms: string): Promise<{ text: string; seconds: number }> {
  const t0 = performance.now();
  const r = await runCli(
    'build',
    image(),
    '--path',
    app,
    '--platform',
    platforms,
    '--publish',
    '--insecure-registry',
    registry.host,
    '--cache-dir',
    join(CACHE, 'build-cache'),
  );
  const seconds = (performance.now() - t0) / 1000;
  const text = `${r.out}\n${r.err}`;
  if (r.code !== 0) throw new Error(`packfarm build failed (${r.code}):\n${text}`);
  return { text, seconds };
}

/** The lines one target printed (the CLI prefixes them with [os/arch] when several targets build). */
const linesOf = (text: string, target: string) =>
  text
    .split('\n')
    .filter((l) => l.startsWith(`[${target}] `))
    .map((l) => l.slice(target.length + 3));

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-default-builder-'));
  await mkdir(CACHE, { recursive: true });
  restoreHome = usePackfarmHome(join(CACHE, 'home'));
  app = join(root, 'node-hello');
  await cp(join(repoRoot, 'examples', 'node-hello'), app, { recursive: true });
  registry = await startRegistry();
  podman = await createPodmanRunner();
}, 120_000);

afterAll(async () => {
  restoreHome?.();
  await podman?.cleanup();
  await registry?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('the default builder on examples/node-hello', () => {
  it('builds linux/amd64 and linux/arm64 without --builder, and podman runs both with their own node', async () => {
    const first = await build('linux/amd64,linux/arm64');
    console.log(`[default-builder] first build: ${first.seconds.toFixed(1)} s`);
    // The default builder is made for the platforms asked for only, and the build used an index of exactly those.
    expect(first.text).not.toMatch(/making the default builder for linux\/(ppc64le|s390x)/);
    const loc = await defaultBuilderLocation({ env: process.env });
    const set = await (await openLayoutStore(loc.builderLayout)).getManifest('linux-amd64_linux-arm64');
    const platforms = (
      JSON.parse(set.bytes.toString('utf8')) as { manifests: { platform: unknown }[] }
    ).manifests.map((m) => m.platform);
    expect(platforms).toEqual([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ]);
    for (const t of ['linux/amd64', 'linux/arm64']) {
      const lines = linesOf(first.text, t);
      expect(lines).toContain('packfarm/nodejs 0.1.0');
      expect(lines).toContain('process web (default): node server.js');
    }
    for (const [arch, nodeArch] of [
      ['amd64', 'x64'],
      ['arm64', 'arm64'],
    ] as const) {
      // The web process runs the start script; arguments go to it (`node server.js --once` prints and exits).
      const ran = await podman.run(image(), { flags: ['--arch', arch], args: ['--once'] });
      expect(ran.stderr).toBe('');
      expect(ran.stdout).toMatch(new RegExp(`^Hello from Node\\.js v22\\.\\d+\\.\\d+ on linux/${nodeArch}$`));
      expect(ran.exitCode).toBe(0);
    }
  }, 1_800_000);

  it('a rebuild without changes reuses Node.js, node_modules and every layer', async () => {
    const again = await build('linux/amd64,linux/arm64');
    console.log(`[default-builder] no-change rebuild: ${again.seconds.toFixed(1)} s`);
    for (const t of ['linux/amd64', 'linux/arm64']) {
      const lines = linesOf(again.text, t);
      expect(lines.some((l) => l.startsWith('Reusing Node.js 22.'))).toBe(true);
      expect(lines.some((l) => l.startsWith('Reusing node_modules: package-lock.json unchanged'))).toBe(true);
      expect(lines.some((l) => l.startsWith('Running npm ci'))).toBe(false);
      expect(lines.some((l) => l.startsWith('Installing Node.js'))).toBe(false);
      expect(lines).toContain("Reusing layer 'packfarm/nodejs:node'");
      expect(lines).toContain("Reusing layer 'packfarm/nodejs:modules'");
      expect(lines.some((l) => l.startsWith('Adding layer'))).toBe(false);
    }
    const summary = again.text.split('\n').filter((l) => /layers:\s+\d+ added/.test(l));
    console.log(`[default-builder] reused: ${summary.map((l) => l.trim()).join(' | ')}`);
    expect(summary).toHaveLength(2);
    for (const l of summary) expect(l).toMatch(/layers:\s+0 added, \d+ reused/);
  }, 900_000);

  it('a change to app code only does not run npm ci again', async () => {
    await appendFile(join(app, 'server.js'), '// a change to the app code only\n');
    const r = await build('linux/amd64');
    expect(r.text).toContain('Reusing node_modules: package-lock.json unchanged');
    expect(r.text).not.toContain('Running npm ci');
    expect(r.text).toContain("Adding layer 'app'");
  }, 900_000);

  it('a change to package-lock.json runs npm ci again', async () => {
    const lockFile = join(app, 'package-lock.json');
    const lock = JSON.parse(await readFile(lockFile, 'utf8')) as Record<string, unknown>;
    // Same packages, other bytes: npm ci still accepts it, the buildpack's key changes.
    await writeFile(lockFile, `${JSON.stringify(lock, null, 4)}\n`);
    const r = await build('linux/amd64');
    expect(r.text).toMatch(/Running npm ci \(package-lock\.json sha256:[0-9a-f]{64}\)/);
    expect(r.text).not.toContain('Reusing node_modules');
    expect(r.text).toContain('Reusing Node.js 22.');
  }, 900_000);

  it('builds the shell and Procfile examples too, each for amd64 and arm64', async () => {
    for (const [example, expected] of [
      ['shell-hello', /^Hello from a shell script on (x86_64|aarch64), running as uid \d+\.$/],
      ['hello', /^Hello, world! This is \S+ on (x86_64|aarch64), built by packfarm\.$/],
    ] as const) {
      const dir = join(root, example);
      await cp(join(repoRoot, 'examples', example), dir, { recursive: true });
      const ref = `${registry.host}/${example}:latest`;
      const r = await runCli(
        'build',
        ref,
        '--path',
        dir,
        '--platform',
        'linux/amd64,linux/arm64',
        '--publish',
        '--insecure-registry',
        registry.host,
      );
      expect(r.code, `${r.out}\n${r.err}`).toBe(0);
      const group = example === 'hello' ? 'packfarm/procfile 0.1.0' : 'packfarm/shell-script 0.1.0';
      expect(linesOf(`${r.out}\n${r.err}`, 'linux/arm64')).toContain(group);
      for (const [arch, machine] of [
        ['amd64', 'x86_64'],
        ['arm64', 'aarch64'],
      ] as const) {
        const ran = await podman.run(ref, { flags: ['--arch', arch] });
        expect(ran.exitCode, ran.stderr).toBe(0);
        expect(ran.stdout).toMatch(expected);
        expect(ran.stdout).toContain(machine);
      }
    }
  }, 900_000);

  // ppc64le takes the same path (Debian 12 has the same packages, the registry the same Node.js 20.11.0); it is
  // run by hand rather than here, to keep the test's time bounded (see spec/buildpacks.md).
  it('builds linux/s390x alone, making only that platform of the default builder, and podman runs it under qemu', async () => {
    const r = await build('linux/s390x');
    console.log(`[default-builder] linux/s390x build (emulated): ${r.seconds.toFixed(1)} s`);
    expect(r.text).not.toMatch(/making the default builder for linux\/(amd64|arm64|ppc64le)/);
    // The registry's s390x binaries stop at 20.11.0: the default range resolves to it on this architecture.
    expect(r.text).toContain(
      `Node.js 20.11.0 for linux/s390x: the newest on the registry satisfying the buildpack's default "22.x || 20.x"`,
    );
    expect(r.text).toContain('process web (default): node server.js');

    const t0 = performance.now();
    const once = await podman.run(image(), { flags: ['--arch', 's390x'], args: ['--once'] });
    console.log(
      `[default-builder] podman run --arch s390x --once: ${((performance.now() - t0) / 1000).toFixed(1)} s`,
    );
    expect(once.stderr).toBe('');
    expect(once.stdout).toBe('Hello from Node.js v20.11.0 on linux/s390x');
    expect(once.exitCode).toBe(0);

    // The web process serves HTTP: asked from inside the container (no network but loopback) with its own node.
    const started = await podman.podman(
      'run',
      '-d',
      '--quiet',
      '--ulimit',
      'nofile=20000:20000',
      '--ulimit',
      'nproc=1000:1000',
      '--tls-verify=false',
      '--pull=always',
      '--network=none',
      '--arch',
      's390x',
      image(),
    );
    expect(started.exitCode, started.stderr).toBe(0);
    const id = started.stdout.trim().split('\n').pop() ?? '';
    try {
      const get = `fetch('http://127.0.0.1:8080/').then(async (r) => process.stdout.write(r.status + ' ' + (await r.text())))`;
      let answer = { stdout: '', stderr: '', exitCode: -1 };
      // Until the server listens (node starts in seconds under qemu); each try is a full request.
      for (let i = 0; i < 120 && answer.exitCode !== 0; i++) {
        if (i > 0) await new Promise((res) => setTimeout(res, 1000));
        answer = await podman.podman('exec', id, '/layers/packfarm_nodejs/node/bin/node', '-e', get);
      }
      // (execa drops the final newline the server sends.)
      expect(answer.stdout).toBe('200 Hello from Node.js v20.11.0 on linux/s390x');
    } finally {
      await podman.podman('rm', '-f', id);
    }
  }, 1_800_000);
});
