import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLifecycleCommand } from '../../src/cli/lifecycle.js';
import type { CliIO } from '../../src/cli/output.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { writeAnalyzedFile, writeGroupFile } from '../../src/platform/files.js';
import { readReport } from '../../src/platform/report.js';
import { build } from '../../src/phase/build.js';
import { createRunImage } from '../helpers/run-image.js';

/**
 * `packfarm lifecycle exporter` as a platform drives it: group.toml and analyzed.toml in the layers dir, the
 * run image named in analyzed.toml, image names as arguments, report.toml written, CNB exit codes.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildpacksDir = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'export');
const group = { group: [{ id: 'export/hello', version: '1.0.0', api: '0.12' }] };

let root: string;
let ws: { app: string; layers: string; platform: string };

async function exporter(args: string[], env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIO = { out: (t) => out.push(t), err: (t) => err.push(t) };
  const code = await runLifecycleCommand(['exporter', ...args], io, {
    PATH: process.env.PATH,
    CNB_PLATFORM_API: '0.15',
    ...env,
  });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-export-cli-'));
  ws = { app: join(root, 'workspace'), layers: join(root, 'layers'), platform: join(root, 'platform') };
  await mkdir(ws.app, { recursive: true });
  await mkdir(ws.layers, { recursive: true });
  await mkdir(ws.platform, { recursive: true });
  await writeFile(join(ws.app, 'index.txt'), 'index\n');
  const runLayout = join(root, 'run-layout');
  await createRunImage({ store: await openLayoutStore(runLayout, { create: true }), tag: 'run' });
  await build({
    appDir: ws.app,
    layersDir: ws.layers,
    platformDir: ws.platform,
    buildpacksDir,
    group,
    plan: { entries: [] },
    target: { os: 'linux', arch: 'amd64' },
    hostEnv: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
  });
  await writeGroupFile(join(ws.layers, 'group.toml'), group);
  await writeAnalyzedFile(join(ws.layers, 'analyzed.toml'), {
    'run-image': { reference: `oci:${runLayout}:run`, target: { os: 'linux', arch: 'amd64' } },
  });
});

afterAll(async () => {
  if (root) await rm(root, { recursive: true, force: true });
});

describe('packfarm lifecycle exporter', () => {
  it('exports to every named layout tag and writes report.toml', async () => {
    const out = join(root, 'out');
    const r = await exporter(
      ['-app', ws.app, '-layers', ws.layers, '-log-level', 'debug', `oci:${out}:one`, `oci:${out}:two`],
      { SOURCE_DATE_EPOCH: '1700000000' },
    );
    // Without a cache, the reference's warning (platforms grep for it) and nothing else.
    expect(r.err).toBe('WARN: No cached data will be used, no cache specified.');
    expect(r.code).toBe(0);
    expect(r.out).toContain("Adding layer 'app'");
    const report = await readReport(join(ws.layers, 'report.toml'));
    expect(report.image.tags).toEqual([`oci:${out}:one`, `oci:${out}:two`]);
    const store = await openLayoutStore(out);
    expect((await store.resolve('one'))?.digest).toBe(report.image.digest);
    expect((await store.resolve('two'))?.digest).toBe(report.image.digest);
    const { stdout } = await execa('skopeo', ['inspect', `oci:${out}:one`]);
    expect(JSON.parse(stdout).Created).toBe('2023-11-14T22:13:20Z');
  });

  it('uses -process-type as the default process', async () => {
    const out = join(root, 'out-worker');
    const r = await exporter([
      '-app',
      ws.app,
      '-layers',
      ws.layers,
      '-process-type',
      'worker',
      `oci:${out}:x`,
    ]);
    expect(r.code).toBe(0);
    const { stdout } = await execa('skopeo', ['inspect', '--config', `oci:${out}:x`]);
    const label = JSON.parse(JSON.parse(stdout).config.Labels['io.buildpacks.build.metadata']);
    expect(label.processes.find((p: { default?: boolean }) => p.default)?.type).toBe('worker');
  });

  it('exports the cache too when -cache-dir is given', async () => {
    const cache = join(root, 'cache');
    const r = await exporter(['-app', ws.app, '-layers', ws.layers, '-cache-dir', cache, `oci:${root}/c:x`]);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect((await readdir(cache)).length).toBeGreaterThan(0);
  });

  it('refuses -daemon and a missing image name', async () => {
    const daemon = await exporter(['-app', ws.app, '-layers', ws.layers, '-daemon', `oci:${root}/d:x`]);
    expect(daemon.code).toBe(3);
    expect(daemon.err).toContain('daemon');
    const none = await exporter(['-app', ws.app, '-layers', ws.layers]);
    expect(none.code).toBe(3);
  });
});
