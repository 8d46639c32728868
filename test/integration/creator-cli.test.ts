import { cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLifecycleCommand } from '../../src/cli/lifecycle.js';
import type { CliIO } from '../../src/cli/output.js';
import { readReport } from '../../src/platform/report.js';
import { registryStore } from '../helpers/cli.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner, createRunImage } from '../helpers/run-image.js';

/**
 * `packfarm lifecycle creator` driven the way a CNB platform drives /cnb/lifecycle/creator: lifecycle flags and
 * CNB_* variables, an order.toml and a buildpacks dir, the image pushed to a registry, report.toml written.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildpacksDir = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'export');

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;

async function creator(args: string[], env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIO = { out: (t) => out.push(t), err: (t) => err.push(t) };
  const code = await runLifecycleCommand(['creator', ...args], io, {
    PATH: process.env.PATH,
    CNB_PLATFORM_API: '0.14',
    ...env,
  });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

async function workspace(name: string) {
  const ws = {
    app: join(root, name, 'workspace'),
    layers: join(root, name, 'layers'),
    platform: join(root, name, 'platform'),
  };
  await cp(join(repoRoot, 'test', 'fixtures', 'apps', 'build-basic'), ws.app, { recursive: true });
  await mkdir(ws.layers, { recursive: true });
  await mkdir(ws.platform, { recursive: true });
  return ws;
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-creator-cli-'));
  registry = await startRegistry();
  podman = await createPodmanRunner();
  const store = registryStore(registry, 'run');
  await createRunImage({ store, tag: 'latest' });
  await writeFile(
    join(root, 'order.toml'),
    '[[order]]\n[[order.group]]\nid = "export/hello"\nversion = "1.0.0"\n',
  );
  await writeFile(join(root, 'run.toml'), `[[images]]\nimage = "${registry.host}/run:latest"\n`);
}, 120_000);

afterAll(async () => {
  await podman?.cleanup();
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('packfarm lifecycle creator', () => {
  it('builds and pushes an image from flags and CNB_* variables; report.toml names its digest', async () => {
    const ws = await workspace('one');
    const image = `${registry.host}/created:latest`;
    const r = await creator(
      [
        '-app',
        ws.app,
        '-layers',
        ws.layers,
        '-platform',
        ws.platform,
        '-order',
        join(root, 'order.toml'),
        '-run',
        join(root, 'run.toml'),
        '-insecure-registry',
        registry.host,
        '-cache-dir',
        join(root, 'cache'),
        '-tag',
        `${registry.host}/created:v1`,
        image,
      ],
      { CNB_BUILDPACKS_DIR: buildpacksDir },
    );
    expect(r.err).not.toMatch(/error/i);
    expect(r.code).toBe(0);
    expect(r.out).toMatch(/===> DETECTING/);
    expect(r.out).toMatch(/\*\*\* Digest: sha256:/);
    const report = await readReport(join(ws.layers, 'report.toml'));
    expect(report.image.tags).toEqual([image, `${registry.host}/created:v1`]);
    const run = await podman.run(`${registry.host}/created:v1`);
    expect(run.stdout.trim()).toMatch(/^hello world GREETING=bonjour .*pwd=\/workspace user=1000$/);
  }, 180_000);

  it('exits with the detect code (20) when no group passes', async () => {
    const ws = await workspace('nodetect');
    await writeFile(
      join(root, 'order-fail.toml'),
      '[[order]]\n[[order.group]]\nid = "test/fail"\nversion = "1.0.0"\n',
    );
    const r = await creator(
      [
        '-app',
        ws.app,
        '-layers',
        ws.layers,
        '-platform',
        ws.platform,
        '-order',
        join(root, 'order-fail.toml'),
        '-run-image',
        `${registry.host}/run:latest`,
        '-insecure-registry',
        registry.host,
        `${registry.host}/created:fail`,
      ],
      { CNB_BUILDPACKS_DIR: join(repoRoot, 'test', 'fixtures', 'buildpacks', 'detect', 'buildpacks') },
    );
    expect(r.code).toBe(20);
  }, 180_000);

  it('refuses -daemon with exit code 3', async () => {
    const ws = await workspace('daemon');
    const r = await creator(['-daemon', '-app', ws.app, '-layers', ws.layers, 'x/y']);
    expect(r.code).toBe(3);
    expect(r.err).toMatch(/-daemon is not supported/);
  });
});
