import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LIFECYCLE_PHASES } from '../../src/cli/lifecycle.js';
import { main } from '../../src/cli/main.js';
import type { CliIO } from '../../src/cli/output.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { createVersionedRunImage } from '../helpers/run-image.js';

/**
 * `packfarm version`, `report` and `prune` as a user runs them (bin/packfarm.js), prune after a real build.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = join(repoRoot, 'bin', 'packfarm.js');
const helloBp = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'export', 'export_hello', '1.0.0');

let root: string;
let env: NodeJS.ProcessEnv;

const packfarm = (...args: string[]) =>
  execa('node', [bin, ...args], { env, extendEnv: false, reject: false });

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-system-'));
  env = {
    PATH: process.env.PATH,
    HOME: join(root, 'home'),
    PACKFARM_HOME: join(root, 'data'),
    XDG_RUNTIME_DIR: join(root, 'run'),
    REGISTRY_AUTH_FILE: join(root, 'auth.json'),
  };
});
afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('packfarm version and report', () => {
  it("version prints package.json's version", async () => {
    const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { version: string };
    const r = await packfarm('version');
    expect(r.exitCode).toBe(0);
    expect(r.stdout.trim()).toBe(pkg.version);
  });

  it('report names the data dir, runc, binfmt and credential sources, never a secret', async () => {
    await writeFile(
      env.REGISTRY_AUTH_FILE!,
      JSON.stringify({
        auths: { 'reg.example:5000': { auth: Buffer.from('me:TOPSECRET').toString('base64') } },
      }),
    );
    const human = await packfarm('report');
    expect(human.exitCode, human.stderr).toBe(0);
    expect(human.stdout).toContain(`data dir:       ${join(root, 'data')}`);
    expect(human.stdout).toMatch(/^runc: +\/\S*runc \(runc version /m);
    expect(human.stdout).toContain(`${env.REGISTRY_AUTH_FILE}: registries reg.example:5000`);
    expect(human.stdout).toContain(`${join(root, 'home', '.docker', 'config.json')}: absent`);
    const json = await packfarm('report', '--json');
    const r = JSON.parse(json.stdout);
    expect(r.credentials[0]).toEqual({
      source: env.REGISTRY_AUTH_FILE,
      present: true,
      registries: ['reg.example:5000'],
      helpers: [],
    });
    expect(r.binfmt.available).toBe(true);
    for (const out of [human.stdout, json.stdout]) {
      expect(out).not.toContain('TOPSECRET');
      expect(out).not.toContain(Buffer.from('me:TOPSECRET').toString('base64'));
    }
  });
});

describe('help and packaging', () => {
  const commands = [
    [],
    ['build'],
    ['rebase'],
    ['inspect'],
    ['sbom', 'download'],
    ['image', 'copy'],
    ['image', 'inspect'],
    ['manifest', 'create'],
    ['manifest', 'add'],
    ['manifest', 'annotate'],
    ['manifest', 'push'],
    ['layer', 'create'],
    ['login'],
    ['logout'],
    ['version'],
    ['report'],
    ['prune'],
    // The lifecycle phases have their own parser and help (cli/lifecycle.ts), held to the same width.
    ['lifecycle'],
    ...LIFECYCLE_PHASES.map((p) => ['lifecycle', p.name]),
  ];

  it('wraps every --help at 80 columns and describes --insecure-registry one way', async () => {
    const descriptions = new Set<string>();
    for (const c of commands) {
      const out: string[] = [];
      const io: CliIO = { out: (t) => out.push(t), err: (t) => out.push(t) };
      expect(await main([...c, '--help'], io)).toBe(0);
      const text = out.join('');
      const long = text.split('\n').filter((l) => l.length > 80);
      expect(long, `packfarm ${c.join(' ')} --help`).toEqual([]);
      // The option's description, unwrapped.
      const m = /--insecure-registry <[^>]+>\s+([\s\S]*?)\n {2}-/.exec(text);
      if (m) descriptions.add(m[1]!.replace(/\s+/g, ' ').replace(' (default: [])', '').trim());
    }
    expect([...descriptions]).toEqual([
      'allow plain HTTP / unverified TLS for this registry (repeatable; also CNB_INSECURE_REGISTRIES; loopback registries need no flag)',
    ]);
  });

  it("package.json's files all exist", async () => {
    const pkg = JSON.parse(await readFile(join(repoRoot, 'package.json'), 'utf8')) as { files: string[] };
    for (const f of pkg.files.filter((x) => x !== 'dist'))
      await expect(stat(join(repoRoot, f))).resolves.toBeDefined();
  });
});

describe('packfarm prune', () => {
  it('frees the build dir and cache a build left, keeps the image, and prints what it freed', async () => {
    const run = await openLayoutStore(join(root, 'run'), { create: true });
    await createVersionedRunImage({ store: run, tag: 'v1', version: 1 });
    const app = join(root, 'app');
    await cp(join(repoRoot, 'test', 'fixtures', 'apps', 'build-basic'), app, { recursive: true });
    const build = await packfarm(
      'build',
      'example.test/app:1',
      '--path',
      app,
      '--buildpack',
      helloBp,
      '--run-image',
      `oci:${join(root, 'run')}:v1`,
    );
    expect(build.exitCode, build.stderr).toBe(0);
    const location = /location: (\S+)/.exec(build.stdout)?.[1] ?? '';
    expect((await readdir(join(root, 'data', 'builds'))).length).toBe(1);
    expect((await readdir(join(root, 'data', 'cache'))).length).toBe(1);

    const young = await packfarm('prune', '--older-than', '1d');
    expect(young.stdout).toContain('Freed 0 B: 0 build dir(s), 0 cache(s)');
    const dry = await packfarm('prune', '--dry-run');
    expect(dry.stdout).toMatch(/^would remove build \S+\/data\/builds\/[0-9a-f]+ \(/m);
    expect(dry.stdout).toMatch(/^Would free [\d.]+ KiB: 1 build dir\(s\), 1 cache\(s\)/m);
    const r = await packfarm('prune');
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^removed cache \S+\/data\/cache\/[0-9a-f]+ \(/m);
    expect(r.stdout).toMatch(/^Freed [\d.]+ KiB: 1 build dir\(s\), 1 cache\(s\), 0 root filesystem\(s\)/m);
    expect(await readdir(join(root, 'data', 'builds'))).toEqual([]);
    expect(await readdir(join(root, 'data', 'cache'))).toEqual([]);
    const inspect = await execa('skopeo', ['inspect', location]);
    expect(JSON.parse(inspect.stdout).Digest).toMatch(/^sha256:/);
  }, 180_000);
});
