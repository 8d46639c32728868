import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
// Imported before builder.js: cli/lifecycle/common.ts imports cli/main.ts, which closes an import cycle back
// through cli/lifecycle.ts; entering the cycle at the dispatcher evaluates it in the production order.
import { runLifecycleCommand } from '../../src/cli/lifecycle.js';
import { builderCommand } from '../../src/cli/lifecycle/builder.js';
import { type CliIO, reportError } from '../../src/cli/output.js';
import { parseToml } from '../../src/util/toml.js';

/**
 * `packfarm lifecycle builder` as a platform calls it: single-dash flags, CNB_* fallbacks and defaults under
 * the layers dir, CNB exit codes. Runs in-process with its own environment; the buildpacks are real processes.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildpacksDir = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'build');
const appFixture = join(repoRoot, 'test', 'fixtures', 'apps', 'build-basic');

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-build-cli-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

let n = 0;
async function layout(
  groupToml: string,
  planToml = '',
): Promise<{ dir: string; app: string; layers: string; platform: string }> {
  const dir = join(root, `c${++n}`);
  const ws = {
    dir,
    app: join(dir, 'workspace'),
    layers: join(dir, 'layers'),
    platform: join(dir, 'platform'),
  };
  await cp(appFixture, ws.app, { recursive: true });
  await mkdir(join(ws.platform, 'env'), { recursive: true });
  await mkdir(ws.layers, { recursive: true });
  await writeFile(join(ws.layers, 'group.toml'), groupToml);
  await writeFile(join(ws.layers, 'plan.toml'), planToml);
  await writeFile(
    join(ws.layers, 'analyzed.toml'),
    '[run-image]\nreference = ""\n[run-image.target]\nos = "linux"\narch = "arm64"\narch-variant = "v8"\n[run-image.target.distro]\nname = "ubuntu"\nversion = "24.04"\n',
  );
  return ws;
}

const bpEntry = (id: string, api = '0.12') =>
  `[[group]]\nid = "${id}"\nversion = "1.0.0"\napi = "${api}"\n\n`;

async function runBuilder(args: string[], env: NodeJS.ProcessEnv) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIO = { out: (t) => out.push(t), err: (t) => err.push(t) };
  // What the `packfarm lifecycle` dispatcher does around a phase.
  const code = await builderCommand.run(args, io, env).catch((e: unknown) => reportError(io, e, false));
  return { code, out: out.join('\n'), err: err.join('\n') };
}

const baseEnv = (extra: Record<string, string> = {}): NodeJS.ProcessEnv => ({
  PATH: '/usr/local/bin:/usr/bin:/bin',
  HOME: '/tmp',
  CNB_PLATFORM_API: '0.15',
  ...extra,
});

describe('packfarm lifecycle builder', () => {
  it('takes paths from CNB_* variables and defaults under -layers; writes metadata.toml', async () => {
    const ws = await layout(bpEntry('test/processes') + bpEntry('test/env-consumer'));
    const r = await runBuilder(
      ['-layers', ws.layers],
      baseEnv({ CNB_APP_DIR: ws.app, CNB_PLATFORM_DIR: ws.platform, CNB_BUILDPACKS_DIR: buildpacksDir }),
    );
    expect(r.err).not.toMatch(/error/);
    expect(r.code).toBe(0);
    const md = parseToml(await readFile(join(ws.layers, 'config', 'metadata.toml'), 'utf8'), 'metadata.toml');
    expect(md['buildpack-default-process-type']).toBe('web');
    expect(md.buildpacks).toEqual([
      { id: 'test/processes', version: '1.0.0', api: '0.12' },
      { id: 'test/env-consumer', version: '1.0.0', api: '0.12' },
    ]);
    expect((md.processes as { type: string; command: string[] }[]).map((p) => [p.type, p.command])).toEqual([
      ['web', ['runtime', '--serve']],
      ['worker', ['runtime']],
    ]);
    // Output is prefixed per buildpack; stderr lines go to stderr.
    expect(r.out).toContain('recorded environment to');
    expect(r.out).not.toContain('[test/env-consumer]');
    expect(r.err).toContain('a warning on stderr');
    // Target data came from analyzed.toml.
    const report = join(ws.layers, 'test_env-consumer', 'report');
    expect(await readFile(join(report, 'CNB_TARGET_ARCH'), 'utf8')).toBe('arm64');
    expect(await readFile(join(report, 'CNB_EXEC_ENV'), 'utf8')).toBe('production');
  });

  it('flags beat environment variables; CNB_EXEC_ENV is read from the environment', async () => {
    const ws = await layout(bpEntry('test/env-consumer'));
    const other = await layout(bpEntry('test/fails'));
    const r = await runBuilder(
      [
        '-app',
        ws.app,
        '-layers',
        ws.layers,
        '-platform',
        ws.platform,
        '-buildpacks',
        buildpacksDir,
        '-log-level',
        'debug',
      ],
      baseEnv({ CNB_LAYERS_DIR: other.layers, CNB_APP_DIR: other.app, CNB_EXEC_ENV: 'development' }),
    );
    expect(r.code).toBe(0);
    expect(await readFile(join(ws.layers, 'test_env-consumer', 'report', 'cwd'), 'utf8')).toBe(`${ws.app}\n`);
    expect(await readFile(join(ws.layers, 'test_env-consumer', 'report', 'CNB_EXEC_ENV'), 'utf8')).toBe(
      'development',
    );
    expect(r.out).toContain('Running build for buildpack test/env-consumer@1.0.0');
  });

  it('exits 51 when a buildpack fails and 52 for invalid buildpack output', async () => {
    const failing = await layout(bpEntry('test/fails'));
    const r1 = await runBuilder(
      [
        '-layers',
        failing.layers,
        '-app',
        failing.app,
        '-platform',
        failing.platform,
        '-buildpacks',
        buildpacksDir,
      ],
      baseEnv(),
    );
    expect(r1.code).toBe(51);
    expect(r1.err).toContain('test/fails@1.0.0: bin/build exited with status 3');
    expect(r1.out).toContain('about to fail');

    const bad = await layout(bpEntry('test/bad-launch'));
    const r2 = await runBuilder(
      ['-layers', bad.layers, '-app', bad.app, '-platform', bad.platform, '-buildpacks', buildpacksDir],
      baseEnv(),
    );
    expect(r2.code).toBe(52);
    expect(r2.err).toContain('processes[0].direct');
  });

  it('exits 11 without a supported CNB_PLATFORM_API, 12 for an unsupported Buildpack API, 3 for bad flags', async () => {
    const ws = await layout(bpEntry('test/env-consumer'));
    const args = [
      '-layers',
      ws.layers,
      '-app',
      ws.app,
      '-platform',
      ws.platform,
      '-buildpacks',
      buildpacksDir,
    ];
    expect((await runBuilder(args, baseEnv({ CNB_PLATFORM_API: '' }))).code).toBe(11);
    expect((await runBuilder(args, baseEnv({ CNB_PLATFORM_API: '0.7' }))).code).toBe(11);
    expect((await runBuilder([...args, '-bogus', 'x'], baseEnv())).code).toBe(3);
    expect((await runBuilder([...args, 'extra'], baseEnv())).code).toBe(3);

    const old = join(root, 'old-bps');
    await mkdir(join(old, 'test_old', '1.0.0', 'bin'), { recursive: true });
    await writeFile(
      join(old, 'test_old', '1.0.0', 'buildpack.toml'),
      'api = "0.6"\n[buildpack]\nid = "test/old"\nversion = "1.0.0"\n',
    );
    await writeFile(join(old, 'test_old', '1.0.0', 'bin', 'build'), '#!/bin/sh\n', { mode: 0o755 });
    const ws2 = await layout('[[group]]\nid = "test/old"\nversion = "1.0.0"\napi = "0.6"\n');
    const r = await runBuilder(
      ['-layers', ws2.layers, '-app', ws2.app, '-platform', ws2.platform, '-buildpacks', old],
      baseEnv(),
    );
    expect(r.code).toBe(12);
    expect(r.err).toContain('0.6');
  });

  it('reports a missing group.toml naming the file', async () => {
    const ws = await layout(bpEntry('test/env-consumer'));
    const r = await runBuilder(
      ['-layers', ws.layers, '-group', join(ws.dir, 'nope.toml'), '-buildpacks', buildpacksDir],
      baseEnv(),
    );
    expect(r.code).toBe(1);
    expect(r.err).toContain(join(ws.dir, 'nope.toml'));
  });

  it('is listed by `packfarm lifecycle` and prints its usage for --help', async () => {
    const out: string[] = [];
    const io: CliIO = { out: (t) => out.push(t), err: () => {} };
    expect(await runLifecycleCommand(['--help'], io, {})).toBe(0);
    expect(out.join('\n')).toMatch(/builder\s+Run bin\/build/);
    out.length = 0;
    expect(await runLifecycleCommand(['builder', '-help'], io, {})).toBe(0);
    expect(out.join('\n')).toBe(builderCommand.usage);
  });

  it('documents every input with its environment variable', () => {
    expect(builderCommand.name).toBe('builder');
    for (const env of [
      'CNB_APP_DIR',
      'CNB_LAYERS_DIR',
      'CNB_GROUP_PATH',
      'CNB_PLAN_PATH',
      'CNB_ANALYZED_PATH',
      'CNB_EXEC_ENV',
    ])
      expect(builderCommand.usage).toContain(env);
  });
});
