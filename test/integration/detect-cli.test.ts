import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLifecycleCommand } from '../../src/cli/lifecycle.js';
import type { CliIO } from '../../src/cli/output.js';
import { parseToml } from '../../src/util/toml.js';

/**
 * `packfarm lifecycle detector` as a platform calls it: single-dash flags, CNB_* fallbacks, the lifecycle's
 * defaults under the layers dir, and CNB exit codes — in-process through the dispatcher and as a real
 * `node bin/packfarm.js` process built from the current sources.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildpacksDir = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'detect', 'buildpacks');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-detect-cli-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

interface Ws {
  dir: string;
  app: string;
  layers: string;
  platform: string;
}

let n = 0;
async function workspace(appFiles: Record<string, string> = {}): Promise<Ws> {
  const dir = join(root, `c${++n}`);
  const ws = {
    dir,
    app: join(dir, 'workspace'),
    layers: join(dir, 'layers'),
    platform: join(dir, 'platform'),
  };
  await mkdir(ws.app, { recursive: true });
  await mkdir(join(ws.platform, 'env'), { recursive: true });
  await mkdir(ws.layers, { recursive: true });
  for (const [name, text] of Object.entries(appFiles)) await writeFile(join(ws.app, name), text);
  return ws;
}

const orderToml = (...groups: string[][]) =>
  groups
    .map((g) => `[[order]]\n${g.map((id) => `[[order.group]]\nid = "${id}"\nversion = "1.0.0"\n`).join('')}`)
    .join('\n');

const baseEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  PATH: process.env.PATH,
  CNB_PLATFORM_API: '0.15',
  ...extra,
});

async function detector(args: string[], env: NodeJS.ProcessEnv) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIO = { out: (t) => out.push(t), err: (t) => err.push(t) };
  const code = await runLifecycleCommand(['detector', ...args], io, env);
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const dirFlags = (ws: Ws) => [
  '-app',
  ws.app,
  '-buildpacks',
  buildpacksDir,
  '-layers',
  ws.layers,
  '-platform',
  ws.platform,
];

async function toml(path: string) {
  return parseToml(await readFile(path, 'utf8'), path);
}

describe('lifecycle detector (in-process)', () => {
  it('writes <layers>/group.toml and plan.toml from flags; analyzed.toml in layers gives the target', async () => {
    const ws = await workspace({ 'package.json': '{}' });
    await writeFile(join(ws.dir, 'order.toml'), orderToml(['test/node', 'test/npm', 'test/env-probe']));
    await writeFile(
      join(ws.layers, 'analyzed.toml'),
      '[run-image]\nreference = ""\n[run-image.target]\nos = "linux"\narch = "arm"\narch-variant = "v7"\n',
    );
    const r = await detector([...dirFlags(ws), '-order', join(ws.dir, 'order.toml')], baseEnv());
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(r.out).toContain('test/env-probe 1.0.0');
    expect((await toml(join(ws.layers, 'group.toml'))).group).toEqual([
      { id: 'test/node', version: '1.0.0', api: '0.12', homepage: 'https://example.test/node' },
      { id: 'test/npm', version: '1.0.0', api: '0.12' },
      { id: 'test/env-probe', version: '1.0.0', api: '0.12' },
    ]);
    const plan = (await toml(join(ws.layers, 'plan.toml'))) as {
      entries: { requires: { metadata?: Record<string, unknown> }[] }[];
    };
    expect(plan.entries).toHaveLength(3);
    expect(plan.entries[2]?.requires[0]?.metadata).toMatchObject({
      target_arch: 'arm',
      target_arch_variant: 'v7',
    });
  });

  it('falls back to CNB_* variables, and flags win over them', async () => {
    const ws = await workspace({ 'requirements.txt': '' });
    await writeFile(join(ws.layers, 'order.toml'), orderToml(['test/python']));
    const env = baseEnv({
      CNB_APP_DIR: ws.app,
      CNB_BUILDPACKS_DIR: buildpacksDir,
      CNB_LAYERS_DIR: ws.layers,
      CNB_PLATFORM_DIR: ws.platform,
      CNB_GROUP_PATH: join(ws.dir, 'env-group.toml'),
      CNB_PLAN_PATH: join(ws.dir, 'env-plan.toml'),
      CNB_LOG_LEVEL: 'debug',
    });
    const r = await detector(['-plan', join(ws.dir, 'flag-plan.toml')], env);
    expect(r.code).toBe(0);
    // <layers>/order.toml is the default order when it exists; debug logging shows the detect results.
    expect(r.out).toContain('pass: test/python@1.0.0');
    expect(existsSync(join(ws.dir, 'env-group.toml'))).toBe(true);
    expect(existsSync(join(ws.dir, 'flag-plan.toml'))).toBe(true);
    expect(existsSync(join(ws.dir, 'env-plan.toml'))).toBe(false);
  });

  it('exits 20 / 21 / 22 as the lifecycle does', async () => {
    const ws = await workspace();
    const cases: [string[][], number, string][] = [
      [[['test/fail']], 20, 'No buildpack groups passed detection.'],
      [[['test/fail'], ['test/error']], 21, 'error: boom'],
      [[['test/broken-composite']], 22, 'buildpack test/does-not-exist@9.9.9 not found'],
    ];
    for (const [groups, code, text] of cases) {
      await writeFile(join(ws.layers, 'order.toml'), orderToml(...groups));
      const r = await detector(dirFlags(ws), baseEnv());
      expect(r.code).toBe(code);
      expect(`${r.out}\n${r.err}`).toContain(text);
    }
  });

  it('rejects unknown or missing CNB_PLATFORM_API with 11, unsupported buildpack APIs with 12', async () => {
    const ws = await workspace();
    await writeFile(join(ws.layers, 'order.toml'), orderToml(['test/bad-api']));
    for (const api of ['0.3', '1.0', undefined]) {
      const r = await detector(dirFlags(ws), {
        PATH: process.env.PATH,
        ...(api ? { CNB_PLATFORM_API: api } : {}),
      });
      expect(r.code).toBe(11);
      expect(r.err).toMatch(/CNB_PLATFORM_API/);
    }
    const r = await detector(dirFlags(ws), baseEnv());
    expect(r.code).toBe(12);
    expect(r.err).toContain('declares Buildpack API "0.4"');
  });

  it('names the file and field of a malformed order.toml (exit 1)', async () => {
    const ws = await workspace();
    await writeFile(
      join(ws.layers, 'order.toml'),
      '[[order]]\n[[order.group]]\nid = "test/node"\nversion = 1\n',
    );
    const r = await detector(dirFlags(ws), baseEnv());
    expect(r.code).toBe(1);
    expect(r.err).toContain(`${join(ws.layers, 'order.toml')}: invalid content: order[0].group[0].version`);
  });

  it('handles usage errors with exit 3 and prints help', async () => {
    const ws = await workspace();
    expect((await detector(['-nope'], baseEnv())).code).toBe(3);
    expect((await detector([...dirFlags(ws), 'extra'], baseEnv())).code).toBe(3);
    expect((await detector(['-log-level', 'loud', ...dirFlags(ws)], baseEnv())).code).toBe(3);
    // -system exists from Platform API 0.15 on.
    expect((await detector(['-system', '/x'], baseEnv({ CNB_PLATFORM_API: '0.14' }))).code).toBe(3);
    const help = await detector(['--help'], {});
    expect(help.code).toBe(0);
    expect(help.out).toMatch(
      /-buildpacks <buildpacks> +CNB_BUILDPACKS_DIR +path to the buildpacks directory/,
    );
    const out: string[] = [];
    const io: CliIO = { out: (t) => out.push(t), err: (t) => out.push(t) };
    expect(await runLifecycleCommand([], io, {})).toBe(3);
    expect(await runLifecycleCommand(['nope'], io, {})).toBe(3);
    expect(await runLifecycleCommand(['--help'], io, {})).toBe(0);
    expect(out.join('\n')).toContain('detector');
  });

  it('merges system buildpacks (Platform API 0.15)', async () => {
    const ws = await workspace();
    await writeFile(join(ws.layers, 'order.toml'), orderToml(['test/or-provider']));
    await writeFile(
      join(ws.dir, 'system.toml'),
      '[[system.post.buildpacks]]\nid = "test/needs-b"\nversion = "1.0.0"\n',
    );
    const r = await detector([...dirFlags(ws), '-system', join(ws.dir, 'system.toml')], baseEnv());
    expect(r.code).toBe(0);
    expect(((await toml(join(ws.layers, 'group.toml'))).group as { id: string }[]).map((g) => g.id)).toEqual([
      'test/or-provider',
      'test/needs-b',
    ]);
  });
});

describe('lifecycle detector (node bin/packfarm.js)', () => {
  beforeAll(() => {
    // Build dist/ from the current sources; tsc emits even when other parts of the tree do not type-check.
    const tsc = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: repoRoot, encoding: 'utf8' });
    if (!existsSync(join(repoRoot, 'dist', 'cli', 'lifecycle', 'detector.js')))
      throw new Error(`building dist/ failed:\n${tsc.stdout}\n${tsc.stderr}`);
  }, 180_000);

  function packfarm(args: string[], env: NodeJS.ProcessEnv): Promise<{ code: number | null; out: string }> {
    return new Promise((resolvePromise, reject) => {
      const child = spawn(
        process.execPath,
        [join(repoRoot, 'bin', 'packfarm.js'), 'lifecycle', 'detector', ...args],
        {
          env,
          stdio: ['ignore', 'pipe', 'pipe'],
        },
      );
      let out = '';
      child.stdout.on('data', (c) => {
        out += c;
      });
      child.stderr.on('data', (c) => {
        out += c;
      });
      child.on('error', reject);
      child.on('close', (code) => resolvePromise({ code, out }));
    });
  }

  it('detects, writes the files and returns the CNB exit codes', async () => {
    const ws = await workspace({ 'package.json': '{}', '.node-version': '22' });
    await writeFile(join(ws.layers, 'order.toml'), orderToml(['test/python'], ['test/node', 'test/npm']));
    const ok = await packfarm(dirFlags(ws), baseEnv());
    expect(ok.out).toContain('test/node 1.0.0');
    expect(ok.code).toBe(0);
    expect(await toml(join(ws.layers, 'plan.toml'))).toEqual({
      entries: [
        {
          providers: [{ id: 'test/node', version: '1.0.0' }],
          requires: [
            { name: 'node', metadata: { version: '22' } },
            { name: 'node', metadata: { build: true } },
          ],
        },
        { providers: [{ id: 'test/npm', version: '1.0.0' }], requires: [{ name: 'npm' }] },
      ],
    });

    const expectations: [string, string[][], NodeJS.ProcessEnv][] = [
      ['20', [['test/fail']], baseEnv()],
      ['21', [['test/error']], baseEnv()],
      ['22', [['test/broken-composite']], baseEnv()],
      ['12', [['test/bad-api']], baseEnv()],
      ['11', [['test/node']], baseEnv({ CNB_PLATFORM_API: '0.99' })],
    ];
    for (const [code, groups, env] of expectations) {
      await writeFile(join(ws.layers, 'order.toml'), orderToml(...groups));
      const r = await packfarm(dirFlags(ws), env);
      expect(`${r.code}`, r.out).toBe(code);
    }
  });
});
