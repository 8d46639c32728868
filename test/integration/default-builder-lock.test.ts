import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { defaultBuilderLocation } from '../../src/builder/default-builder.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { TEST_BASE_CACHE } from '../helpers/base-images.js';

/**
 * Two packfarm processes wanting the default builder at once (a farm node running two builds, two terminals):
 * each platform is made exactly once, under its lock; the other process waits, says so, and uses the result.
 * A process killed while making a platform leaves its lock behind; the next one takes it over and makes the
 * platform again from scratch. Real processes (dist/ through `node -e`), real Debian packages (dash and
 * coreutils, cached with the other tests' under TEST_BASE_CACHE) and a one-buildpack definitions dir, so
 * one platform takes seconds rather than the real default builder's minutes.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const PLATFORM = 'linux/amd64';

let root: string;
let defs: string;

beforeAll(async () => {
  // Build dist/ from the current sources; tsc emits even when other parts of the tree do not type-check.
  const tsc = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: repoRoot, encoding: 'utf8' });
  if (!existsSync(join(repoRoot, 'dist', 'builder', 'default-builder.js')))
    throw new Error(`building dist/ failed:\n${tsc.stdout}\n${tsc.stderr}`);
  root = await mkdtemp(join(tmpdir(), 'pf-default-builder-lock-'));
  const bp = join(root, 'buildpacks', 'hello');
  await mkdir(join(bp, 'bin'), { recursive: true });
  await writeFile(
    join(bp, 'buildpack.toml'),
    'api = "0.12"\n[buildpack]\nid = "test/hello"\nversion = "0.0.1"\n[[targets]]\nos = "linux"\narch = "amd64"\n',
  );
  for (const script of ['detect', 'build']) {
    await writeFile(join(bp, 'bin', script), '#!/bin/sh\nexit 0\n');
    await chmod(join(bp, 'bin', script), 0o755);
  }
  defs = join(root, 'builders', 'tiny');
  await mkdir(defs, { recursive: true });
  await writeFile(
    join(defs, 'builder.toml'),
    [
      '[[buildpacks]]',
      'uri = "../../buildpacks/hello"',
      '[[order]]',
      '[[order.group]]',
      'id = "test/hello"',
      'version = "0.0.1"',
      '[build]',
      'image = "oci:unused:build"',
      '[[run.images]]',
      'image = "oci:unused:run"',
      '[[targets]]',
      'os = "linux"',
      'arch = "amd64"',
      '',
    ].join('\n'),
  );
  await writeFile(
    join(defs, 'base.toml'),
    [
      'id = "io.packfarm.test.tiny"',
      'distro = "debian:12"',
      'architectures = ["amd64"]',
      '[build]',
      'essential = false',
      'packages = ["dash", "coreutils"]',
      '[run]',
      'essential = false',
      'packages = ["dash"]',
      '',
    ].join('\n'),
  );
}, 300_000);

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

interface Run {
  child: ChildProcess;
  lines: string[];
  /** Resolves when a progress line containing `text` was printed. */
  saw(text: string): Promise<void>;
  done: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
}

/** A process asking for the default builder of `defs` for PLATFORM, printing its progress and its result. */
function start(home: string): Run {
  const script = `
    const { defaultBuilder } = await import(${JSON.stringify(join(repoRoot, 'dist', 'builder', 'default-builder.js'))});
    const { parsePlatform } = await import(${JSON.stringify(join(repoRoot, 'dist', 'oci', 'platform.js'))});
    const [home, defs, cache, platform] = process.argv.slice(1);
    const r = await defaultBuilder({
      env: { PACKFARM_HOME: home },
      definitionsDir: defs,
      baseCacheDir: cache,
      platforms: [parsePlatform(platform)],
      onProgress: (m) => console.log('progress: ' + m),
    });
    console.log('result: ' + JSON.stringify(r));
  `;
  const child = spawn(
    process.execPath,
    ['--input-type=module', '-e', script, home, defs, TEST_BASE_CACHE, PLATFORM],
    {
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  const lines: string[] = [];
  const waiters: Array<{ text: string; resolve: () => void }> = [];
  const take = (chunk: Buffer) => {
    for (const l of chunk.toString('utf8').split('\n').filter(Boolean)) {
      lines.push(l);
      for (const w of waiters.filter((x) => l.includes(x.text))) w.resolve();
    }
  };
  child.stdout?.on('data', take);
  child.stderr?.on('data', take);
  const done = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((r) =>
    child.on('exit', (code, signal) => r({ code, signal })),
  );
  return {
    child,
    lines,
    done,
    saw: (text) =>
      lines.some((l) => l.includes(text))
        ? Promise.resolve()
        : new Promise<void>((resolveSaw, reject) => {
            waiters.push({ text, resolve: resolveSaw });
            void done.then(() => reject(new Error(`exited before printing "${text}":\n${lines.join('\n')}`)));
          }),
  };
}

function resultOf(run: Run): { reference: string; created: boolean; made: string[] } {
  const line = run.lines.find((l) => l.startsWith('result: '));
  if (!line) throw new Error(`no result:\n${run.lines.join('\n')}`);
  return JSON.parse(line.slice('result: '.length));
}

/** The builder image the home holds for PLATFORM: a real builder (its CNB labels), and nothing left over. */
async function expectMadeOnce(home: string, reference: string) {
  const loc = await defaultBuilderLocation({ env: { PACKFARM_HOME: home }, definitionsDir: defs });
  expect(reference).toBe(`oci:${loc.builderLayout}:linux-amd64`);
  expect((await readdir(loc.home)).sort()).toEqual(['base', 'builder', 'ready-linux-amd64']);
  const builder = await openLayoutStore(loc.builderLayout);
  const manifest = JSON.parse((await builder.getManifest('linux-amd64')).bytes.toString('utf8'));
  const config = JSON.parse(await readFile(builder.blobPath(manifest.config.digest), 'utf8'));
  expect(Object.keys(config.config.Labels)).toEqual(
    expect.arrayContaining(['io.buildpacks.builder.metadata', 'io.buildpacks.buildpack.order']),
  );
  expect(config.architecture).toBe('amd64');
  const base = await openLayoutStore(loc.baseLayout);
  expect((await base.listTags()).sort()).toEqual(['build-linux-amd64', 'run-linux-amd64']);
}

describe('the default builder between processes', () => {
  it('two processes at once: exactly one makes it, the other waits and uses it', async () => {
    const home = join(root, 'race');
    const [a, b] = [start(home), start(home)];
    const [ea, eb] = await Promise.all([a.done, b.done]);
    expect(ea, a.lines.join('\n')).toEqual({ code: 0, signal: null });
    expect(eb, b.lines.join('\n')).toEqual({ code: 0, signal: null });
    const runs = [a, b];
    const makers = runs.filter((r) => resultOf(r).created);
    expect(makers, runs.map((r) => r.lines.join('\n')).join('\n---\n')).toHaveLength(1);
    const maker = makers[0]!;
    const waiter = runs.find((r) => r !== maker)!;
    expect(resultOf(maker).made).toEqual([PLATFORM]);
    expect(resultOf(waiter)).toMatchObject({ created: false, made: [] });
    expect(resultOf(waiter).reference).toBe(resultOf(maker).reference);
    // The waiter waited on the maker's lock (it started before the platform was ready), said so, and used it.
    expect(waiter.lines).toContain(
      `progress: waiting for pid ${maker.child.pid} on ${hostname()} to finish making the default builder for ${PLATFORM} (0 s so far, up to 1800 s)`,
    );
    expect(waiter.lines).toContain(
      `progress: default builder for ${PLATFORM}: made by another packfarm process, using it`,
    );
    // Exactly one creation: the base images and the builder image were written by one process only.
    const made = (r: Run) => r.lines.filter((l) => /^progress: (base (build|run) image|builder) /.test(l));
    expect(made(maker)).toHaveLength(3);
    expect(made(waiter)).toEqual([]);
    await expectMadeOnce(home, resultOf(maker).reference);
  }, 600_000);

  it("a dead maker's lock is taken over and its half-made platform made again", async () => {
    const home = join(root, 'killed');
    const first = start(home);
    // Killed once the build base image is written and the run image is not.
    await first.saw('progress: base build image linux/amd64');
    first.child.kill('SIGKILL');
    expect((await first.done).signal).toBe('SIGKILL');
    const loc = await defaultBuilderLocation({ env: { PACKFARM_HOME: home }, definitionsDir: defs });
    expect((await readdir(loc.home)).sort()).toContain('linux-amd64.lock');
    expect(existsSync(join(loc.home, 'ready-linux-amd64'))).toBe(false);

    // The killed maker's scratch in the shared package cache names its owner.
    const leftOf = async (pid: number | undefined) =>
      (await readdir(join(TEST_BASE_CACHE, 'base'))).filter((n) => n.includes(`.p${pid}-`));
    expect(await leftOf(first.child.pid)).toEqual(
      [`packfarm-base-work.p${first.child.pid}-`].map((n) => expect.stringContaining(n)),
    );

    const second = start(home);
    expect(await second.done, second.lines.join('\n')).toEqual({ code: 0, signal: null });
    expect(resultOf(second)).toMatchObject({ created: true, made: [PLATFORM] });
    expect(second.lines.some((l) => l.includes('waiting for'))).toBe(false);
    await expectMadeOnce(home, resultOf(second).reference);
    // … and the next base create swept it.
    expect(await leftOf(first.child.pid)).toEqual([]);
  }, 600_000);
});
