import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type PodmanRunner, createPodmanRunner } from '../helpers/run-image.js';

/**
 * The README's quick start, run as written: the commands come out of README.md's "Quick start" code blocks, so
 * the README cannot drift from what works. Only /tmp/pf is swapped for a temp dir, `npm ci` is left out
 * (`npm test` has just installed and compiled dist/), and podman runs with the flags this machine needs
 * (createPodmanRunner), as the README's note says.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const README_DIR = '/tmp/pf';

function quickStartBlocks(readme: string): string[] {
  const start = readme.indexOf('\n## Quick start');
  expect(start, 'README.md has a "## Quick start" section').toBeGreaterThanOrEqual(0);
  const end = readme.indexOf('\n## ', start + 1);
  const section = readme.slice(start, end < 0 ? undefined : end);
  return [...section.matchAll(/^```[^\n]*\n([\s\S]*?)^```$/gm)].map((m) => (m[1] ?? '').trim());
}

let root: string;
let podman: PodmanRunner;
let buildBlock: string;
let runLines: string[];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-quickstart-'));
  podman = await createPodmanRunner();
  const blocks = quickStartBlocks(await readFile(join(repoRoot, 'README.md'), 'utf8'));
  const build = blocks.find((b) => b.includes('packfarm.js build'));
  const run = blocks.find((b) => b.includes('podman run'));
  if (!build || !run)
    throw new Error(`README quick start lacks the build or the run block:\n${blocks.join('\n---\n')}`);
  buildBlock = build;
  runLines = run.split('\n').map((l) => l.trim());
});

afterAll(async () => {
  await podman?.cleanup();
  await rm(root, { recursive: true, force: true });
});

const inRoot = (command: string) => command.replaceAll(README_DIR, join(root, 'pf'));

/** A README command line through sh in the repository, as a reader would paste it. */
function sh(command: string) {
  return execa('sh', ['-c', inRoot(command)], {
    cwd: repoRoot,
    env: { PACKFARM_HOME: join(root, 'home'), NO_COLOR: '1' },
    reject: false,
    all: true,
  });
}

/** `podman run --rm [--entrypoint T] IMAGE` from the README, through the test's private podman. */
function podmanFromReadme(line: string, env?: Record<string, string>) {
  const words = inRoot(line).split(/\s+/);
  expect(words.slice(0, 3)).toEqual(['podman', 'run', '--rm']);
  const rest = words.slice(3);
  let entrypoint: string | undefined;
  if (rest[0] === '--entrypoint') {
    entrypoint = rest[1];
    rest.splice(0, 2);
  }
  expect(rest, `only --entrypoint is understood in: ${line}`).toHaveLength(1);
  return podman.run(rest[0] as string, { ...(entrypoint ? { entrypoint } : {}), ...(env ? { env } : {}) });
}

describe('README quick start', () => {
  it('builds the hello example with the one chained command', async () => {
    expect(buildBlock.split('\n')).toHaveLength(1);
    expect(buildBlock.startsWith('npm ci && ')).toBe(true);
    expect(buildBlock).toContain(README_DIR);
    // The command after `npm ci` runs the compiled CLI and script.
    expect(existsSync(join(repoRoot, 'dist', 'builder', 'busybox-run-image.js')), 'run `npm run build`').toBe(
      true,
    );
    const r = await sh(buildBlock.slice('npm ci && '.length));
    expect(r.exitCode, r.all).toBe(0);
    expect(r.all).toMatch(/wrote run image oci:\S+\/pf\/run:latest \(linux\/\w+\) sha256:[0-9a-f]{64}/);
    expect(r.all).toContain('process web (default): ./hello.sh');
    expect(r.all).toMatch(/Successfully built image oci:\S+\/pf\/app:latest/);
  });

  it('runs the default process and the worker with podman', async () => {
    const lines = runLines.filter((l) => l.startsWith('podman run'));
    expect(lines).toHaveLength(2);
    const [webLine, workerLine] = lines as [string, string];
    expect(workerLine).toContain('--entrypoint worker');

    const web = await podmanFromReadme(webLine);
    expect(web.stderr).toBe('');
    expect(web.exitCode).toBe(0);
    expect(web.stdout.trim()).toMatch(/^Hello, world! This is cnb on \S+, built by packfarm\.$/);

    // The greeting takes its name from the environment.
    const named = await podmanFromReadme(webLine, { GREETING_NAME: 'quick start' });
    expect(named.stdout.trim()).toMatch(/^Hello, quick start! This is cnb on /);

    const worker = await podmanFromReadme(workerLine);
    expect(worker.exitCode).toBe(0);
    expect(worker.stdout.trim()).toBe('working as cnb in /workspace');
  });

  it('inspects the image as the README shows', async () => {
    const line = runLines.find((l) => l.includes('packfarm.js inspect'));
    expect(line).toBeDefined();
    const r = await sh(line as string);
    expect(r.exitCode, r.all).toBe(0);
    expect(r.stdout).toMatch(/packfarm\/procfile\s+0\.1\.0/);
    expect(r.stdout).toMatch(/web \(default\)\s+sh -c \.\/hello\.sh/);
    expect(r.stdout).toMatch(/worker\s+sh -c echo "working as \$\(id -un\) in \$PWD"/);
    expect(r.stdout).toMatch(/Distro: packfarm-demo 1/);
    expect(r.stdout).toMatch(/Rebasable: true/);
  });
});

describe('scripts/run-image.mjs', () => {
  it('says how to install busybox-static when the binary is missing', async () => {
    const r = await execa(
      process.execPath,
      ['scripts/run-image.mjs', `oci:${join(root, 'nobusybox')}:latest`, '--busybox', join(root, 'none')],
      { cwd: repoRoot, reject: false },
    );
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`${join(root, 'none')} is missing`);
    expect(r.stderr).toContain('apt-get install busybox-static');
  });
});
