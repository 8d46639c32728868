import { createHash } from 'node:crypto';
import { execFileSync } from 'node:child_process';
import {
  chmod,
  chown,
  cp,
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { runLifecycleCommand } from '../../src/cli/lifecycle.js';
import { layoutPathFor } from '../../src/cli/lifecycle/analyzer.js';
import type { CliIO } from '../../src/cli/output.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { createRegistryStore } from '../../src/image/registry-store.js';
import { readAnalyzedFile } from '../../src/platform/files.js';
import { readReport } from '../../src/platform/report.js';
import { compileSrcForChildProcesses } from '../helpers/compiled-src.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { createRunImage } from '../helpers/run-image.js';

/**
 * Conformance with the reference lifecycle, phase by phase, as a platform drives /cnb/lifecycle/<phase>:
 * the reference's flags and CNB_* variables, a registry with per-repository rights (token auth) and OCI
 * layouts. Each case follows one behaviour of the reference's acceptance tests (analyzer_test.go,
 * restorer_test.go, exporter_test.go, creator_test.go), with our own fixtures.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const BUILDPACKS = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'conformance');
const GROUP = '[[group]]\nid = "conf/cacher"\nversion = "1.0.0"\napi = "0.10"\n';
const ORDER = '[[order]]\n[[order.group]]\nid = "conf/cacher"\nversion = "1.0.0"\n';
const USER = { uid: 2222, gid: 3333 };

let root: string;
/**
 * Token auth: `builder` may do everything except read conf/run-denied and push to conf/readonly; `admin` may do
 * everything.
 */
let reg: TestRegistry;
/** Another registry, anonymous: for the mirror choice. */
let other: TestRegistry;
let auth: string;

beforeAll(async () => {
  if (process.getuid?.() !== 0)
    throw new Error('the lifecycle conformance tests hand files to other users: run them as root');
  root = await mkdtemp(join(tmpdir(), 'pf-conformance-'));
  reg = await startRegistry({
    auth: 'token',
    users: [
      { name: 'admin', password: 'admin-secret' },
      { name: 'builder', password: 'builder-secret' },
    ],
    token: {
      grant: (user, _type, name, asked) => {
        if (user !== 'builder') return asked;
        if (name === 'conf/run-denied') return [];
        if (name === 'conf/readonly') return asked.filter((a) => a === 'pull');
        return asked;
      },
    },
  });
  other = await startRegistry();
  const admin = {
    insecureRegistries: [reg.host],
    credentials: { username: 'admin', password: 'admin-secret' },
  };
  for (const repo of ['conf/run-ok', 'conf/run-denied'])
    await createRunImage({
      store: createRegistryStore({ registry: reg.host, repository: repo }, admin),
      tag: 'v1',
    });
  await createRunImage({
    store: createRegistryStore(
      { registry: other.host, repository: 'conf/run' },
      { insecureRegistries: [other.host] },
    ),
    tag: 'v1',
  });
  auth = JSON.stringify({ [reg.host]: `Basic ${Buffer.from('builder:builder-secret').toString('base64')}` });
}, 120_000);

afterAll(async () => {
  await reg?.stop();
  await other?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

async function phase(name: string, args: string[], env: NodeJS.ProcessEnv = {}) {
  const out: string[] = [];
  const err: string[] = [];
  const io: CliIO = { out: (t) => out.push(t), err: (t) => err.push(t) };
  const code = await runLifecycleCommand([name, ...args], io, {
    PATH: process.env.PATH,
    CNB_PLATFORM_API: '0.14',
    CNB_REGISTRY_AUTH: auth,
    CNB_INSECURE_REGISTRIES: `${reg.host},${other.host}`,
    ...env,
  });
  return { code, out: out.join('\n'), err: err.join('\n') };
}

/** An image's config as skopeo reads it from the token registry (as `builder`). */
async function registryConfig(image: string) {
  const { stdout } = await execa('skopeo', [
    'inspect',
    '--config',
    '--tls-verify=false',
    '--creds',
    'builder:builder-secret',
    `docker://${image}`,
  ]);
  return JSON.parse(stdout);
}

/** A fresh app/layers/platform set, plus order.toml and group.toml for the conformance buildpack. */
async function workspace(name: string) {
  const dir = join(root, name);
  const ws = {
    dir,
    app: join(dir, 'workspace'),
    layers: join(dir, 'layers'),
    platform: join(dir, 'platform'),
    order: join(dir, 'order.toml'),
  };
  for (const d of [ws.app, ws.layers, ws.platform]) await mkdir(d, { recursive: true });
  await writeFile(join(ws.app, 'index.txt'), 'app\n');
  await writeFile(ws.order, ORDER);
  return ws;
}

type Workspace = Awaited<ReturnType<typeof workspace>>;

function dirFlags(ws: Workspace): string[] {
  return ['-app', ws.app, '-layers', ws.layers, '-platform', ws.platform];
}

/** The exporter takes no -platform. */
function exportFlags(ws: Workspace): string[] {
  return ['-app', ws.app, '-layers', ws.layers];
}

async function detectAndBuild(ws: Workspace, env: NodeJS.ProcessEnv = {}) {
  const d = await phase('detector', [...dirFlags(ws), '-buildpacks', BUILDPACKS, '-order', ws.order], env);
  expect(d.code, d.err).toBe(0);
  const b = await phase('builder', [...dirFlags(ws), '-buildpacks', BUILDPACKS], env);
  expect(b.code, b.err).toBe(0);
  return { detect: d, build: b };
}

/** Every path under `dir` (itself included) with its owner. */
async function owners(dir: string): Promise<Map<string, string>> {
  const out = new Map<string, string>();
  const walk = async (p: string) => {
    const s = await lstat(p);
    out.set(p, `${s.uid}:${s.gid}`);
    if (s.isDirectory()) for (const n of await readdir(p)) await walk(join(p, n));
  };
  await walk(dir);
  return out;
}

const ownerOf = async (p: string) => {
  const s = await stat(p);
  return `${s.uid}:${s.gid}`;
};

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('privileges (analyzer_test.go, creator_test.go)', () => {
  it('the analyzer run as root hands an unwritable layers dir to CNB_USER_ID:CNB_GROUP_ID, recursively, and writes analyzed.toml as that user', async () => {
    const ws = await workspace('priv-analyzer');
    await writeFile(join(ws.layers, 'group.toml'), GROUP);
    await mkdir(join(ws.layers, 'conf_cacher'));
    execFileSync('chown', ['-R', '9999:9999', ws.layers]);
    execFileSync('chmod', ['-R', '775', ws.layers]);
    const analyzed = join(ws.dir, 'some-dir', 'some-analyzed.toml');
    const r = await phase(
      'analyzer',
      [
        '-layers',
        ws.layers,
        '-analyzed',
        analyzed,
        '-run-image',
        `${reg.host}/conf/run-ok:v1`,
        `${reg.host}/conf/app`,
      ],
      { CNB_USER_ID: String(USER.uid), CNB_GROUP_ID: String(USER.gid) },
    );
    expect(r.code, r.err).toBe(0);
    expect(await ownerOf(ws.layers)).toBe('2222:3333');
    expect(await ownerOf(join(ws.layers, 'group.toml'))).toBe('2222:3333');
    expect(await ownerOf(join(ws.layers, 'conf_cacher'))).toBe('2222:3333');
    expect(await ownerOf(analyzed)).toBe('2222:3333');
  });

  it('leaves a layers dir the user can already write as it is (the reference does not walk it)', async () => {
    const ws = await workspace('priv-writable');
    await writeFile(join(ws.layers, 'group.toml'), GROUP);
    await chown(ws.layers, USER.uid, USER.gid);
    await chown(join(ws.layers, 'group.toml'), 9999, 9999);
    const r = await phase('analyzer', [
      '-layers',
      ws.layers,
      '-uid',
      '2222',
      '-gid',
      '3333',
      '-run-image',
      `${reg.host}/conf/run-ok:v1`,
      `${reg.host}/conf/app`,
    ]);
    expect(r.code, r.err).toBe(0);
    expect(await ownerOf(join(ws.layers, 'group.toml'))).toBe('9999:9999');
    expect(await ownerOf(join(ws.layers, 'analyzed.toml'))).toBe('2222:3333');
  });

  it('the creator run as root leaves everything it wrote (layers, analyzed/group/plan/report, cache) to the user', async () => {
    const ws = await workspace('priv-creator');
    const cache = join(ws.dir, 'cache');
    await mkdir(cache);
    await chmod(cache, 0o755);
    const r = await phase(
      'creator',
      [
        ...dirFlags(ws),
        '-buildpacks',
        BUILDPACKS,
        '-order',
        ws.order,
        '-cache-dir',
        cache,
        '-run-image',
        `${reg.host}/conf/run-ok:v1`,
        `${reg.host}/conf/app-creator:latest`,
      ],
      { CNB_USER_ID: String(USER.uid), CNB_GROUP_ID: String(USER.gid) },
    );
    expect(r.code, r.err).toBe(0);
    for (const f of ['analyzed.toml', 'group.toml', 'plan.toml', 'report.toml', 'config/metadata.toml'])
      expect(await ownerOf(join(ws.layers, f)), f).toBe('2222:3333');
    const notUser = [...(await owners(ws.layers)), ...(await owners(cache))].filter(
      ([, o]) => o !== '2222:3333',
    );
    expect(notUser).toEqual([]);
    expect((await owners(cache)).size).toBeGreaterThan(2);
  });
});

describe('privileges of the exporter and the restorer (exporter_test.go, restorer_test.go)', () => {
  it('as root they hand the cache dir, report.toml and restored layers to CNB_USER_ID:CNB_GROUP_ID', async () => {
    const ws = await workspace('priv-export-restore');
    await writeFile(
      join(ws.layers, 'analyzed.toml'),
      `[run-image]\nreference = "${reg.host}/conf/run-ok:v1"\n[run-image.target]\nos = "linux"\narch = "amd64"\n`,
    );
    await detectAndBuild(ws);
    const cache = join(ws.dir, 'cache');
    await mkdir(cache, { mode: 0o755 });
    const user = { CNB_USER_ID: String(USER.uid), CNB_GROUP_ID: String(USER.gid) };
    const e = await phase(
      'exporter',
      [...exportFlags(ws), '-cache-dir', cache, `${reg.host}/conf/app-priv:latest`],
      user,
    );
    expect(e.code, e.err).toBe(0);
    expect([...(await owners(cache))].filter(([, o]) => o !== '2222:3333')).toEqual([]);
    expect(await ownerOf(join(ws.layers, 'report.toml'))).toBe('2222:3333');

    const fresh = await workspace('priv-restore');
    await writeFile(join(fresh.layers, 'group.toml'), GROUP);
    await cp(join(ws.layers, 'analyzed.toml'), join(fresh.layers, 'analyzed.toml'));
    const r = await phase('restorer', ['-layers', fresh.layers, '-cache-dir', cache], user);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('Restoring data for "conf/cacher:deps" from cache');
    expect(await ownerOf(fresh.layers)).toBe('2222:3333');
    const deps = [...(await owners(join(fresh.layers, 'conf_cacher')))];
    expect(deps.length).toBeGreaterThan(3);
    expect(deps.filter(([, o]) => o !== '2222:3333')).toEqual([]);
  });
});

describe('run image selection (analyzer_test.go "called with run")', () => {
  const runToml = async (name: string, text: string) => {
    const p = join(root, `${name}.run.toml`);
    await writeFile(p, text);
    return p;
  };

  it('takes the first readable image of run.toml: a denied image and a missing mirror are passed over', async () => {
    const ws = await workspace('run-select');
    const run = await runToml(
      'select',
      `[[images]]\nimage = "${reg.host}/conf/run-denied:v1"\nmirrors = ["${reg.host}/conf/run-missing:v1"]\n\n` +
        `[[images]]\nimage = "${reg.host}/conf/run-ok:v1"\n`,
    );
    const r = await phase('analyzer', ['-layers', ws.layers, '-run', run, `${reg.host}/conf/app`]);
    expect(r.code, r.err).toBe(0);
    const analyzed = await readAnalyzedFile(join(ws.layers, 'analyzed.toml'));
    expect(analyzed?.['run-image']?.reference).toMatch(
      new RegExp(`^${reg.host}/conf/run-ok@sha256:[0-9a-f]{64}$`),
    );
    expect(analyzed?.['run-image']?.image).toBe(`${reg.host}/conf/run-ok:v1`);
  });

  it("prefers the image or mirror on the output image's registry", async () => {
    const ws = await workspace('run-mirror');
    const run = await runToml(
      'mirror',
      `[[images]]\nimage = "${reg.host}/conf/run-ok:v1"\nmirrors = ["${other.host}/conf/run:v1"]\n`,
    );
    const chosen = async (output: string) => {
      const r = await phase('analyzer', ['-layers', ws.layers, '-run', run, output]);
      expect(r.code, r.err).toBe(0);
      return (await readAnalyzedFile(join(ws.layers, 'analyzed.toml')))?.['run-image']?.image;
    };
    expect(await chosen(`${other.host}/conf/app`)).toBe(`${other.host}/conf/run:v1`);
    expect(await chosen(`${reg.host}/conf/app`)).toBe(`${reg.host}/conf/run-ok:v1`);
  });

  it('fails with the reference meaning and exit code 3 when no run image can be read (analyzer and creator)', async () => {
    const ws = await workspace('run-none');
    const run = await runToml(
      'none',
      `[[images]]\nimage = "${reg.host}/conf/run-denied:v1"\nmirrors = ["${reg.host}/conf/run-missing:v1"]\n`,
    );
    const a = await phase('analyzer', ['-layers', ws.layers, '-run', run, `${reg.host}/conf/app`]);
    expect(a.code).toBe(3);
    expect(a.err).toContain('failed to find accessible run image');
    const c = await phase('creator', [
      ...dirFlags(ws),
      '-buildpacks',
      BUILDPACKS,
      '-order',
      ws.order,
      '-run',
      run,
      `${reg.host}/conf/app`,
    ]);
    expect(c.code).toBe(3);
    expect(c.err).toContain('failed to find accessible run image');
    const empty = await runToml('empty', '');
    const e = await phase('analyzer', ['-layers', ws.layers, '-run', empty, `${reg.host}/conf/app`]);
    expect(e.code).toBe(3);
    expect(e.err).toContain('-run-image is required when there is no run metadata available');
  });

  it('the creator builds on the readable run image and records its run.toml entry in the label', async () => {
    const ws = await workspace('run-creator');
    const run = await runToml(
      'creator',
      `[[images]]\nimage = "${reg.host}/conf/run-denied:v1"\n\n[[images]]\nimage = "${reg.host}/conf/run-ok:v1"\nmirrors = ["${other.host}/conf/run:v1"]\n`,
    );
    const image = `${reg.host}/conf/app-run-creator:latest`;
    const r = await phase('creator', [
      ...dirFlags(ws),
      '-buildpacks',
      BUILDPACKS,
      '-order',
      ws.order,
      '-run',
      run,
      image,
    ]);
    expect(r.code, r.err).toBe(0);
    const label = JSON.parse((await registryConfig(image)).config.Labels['io.buildpacks.lifecycle.metadata']);
    expect(label.runImage.image).toBe(`${reg.host}/conf/run-ok:v1`);
    expect(label.runImage.mirrors).toEqual([`${other.host}/conf/run:v1`]);
    expect(label.runImage.reference).toMatch(new RegExp(`^${reg.host}/conf/run-ok@sha256:`));
  });
});

describe('registry access checked before analysis (analyzer_test.go "ensure registry read/write access")', () => {
  it('the analyzer and the creator refuse an output image, a -tag or a cache image they cannot push to, and a previous image they cannot read (exit 32)', async () => {
    const ws = await workspace('access');
    const runOk = `${reg.host}/conf/run-ok:v1`;
    const readonly = `${reg.host}/conf/readonly`;
    const analyze = (args: string[]) =>
      phase('analyzer', ['-layers', ws.layers, '-run-image', runOk, ...args]);

    const out = await analyze([readonly]);
    expect(out.code).toBe(32);
    expect(out.err).toContain(`failed to ensure registry read/write access to ${readonly}`);
    const tag = await analyze(['-tag', `${readonly}:extra`, `${reg.host}/conf/app-access`]);
    expect(tag.code).toBe(32);
    expect(tag.err).toContain(`failed to ensure registry read/write access to ${readonly}:extra`);
    const cache = await analyze(['-cache-image', `${readonly}:cache`, `${reg.host}/conf/app-access`]);
    expect(cache.code).toBe(32);
    expect(cache.err).toContain(`failed to ensure registry read/write access to ${readonly}:cache`);
    const prev = await analyze([
      '-previous-image',
      `${reg.host}/conf/run-denied:v1`,
      `${reg.host}/conf/app-access`,
    ]);
    expect(prev.code).toBe(32);
    expect(prev.err).toContain(`failed to ensure registry read access to ${reg.host}/conf/run-denied:v1`);
    // A previous image that does not exist yet is fine; nothing was pushed by the checks.
    const ok = await analyze([`${reg.host}/conf/app-access`]);
    expect(ok.code, ok.err).toBe(0);
    const c = await phase('creator', [
      ...dirFlags(ws),
      '-buildpacks',
      BUILDPACKS,
      '-order',
      ws.order,
      '-run-image',
      runOk,
      readonly,
    ]);
    expect(c.code).toBe(32);
    expect(c.err).toContain(`failed to ensure registry read/write access to ${readonly}`);
  });
});

describe('run image after the analyzer (restorer_test.go, exporter_test.go)', () => {
  it('the restorer (Platform API 0.14+) fails with exit 1 when the chosen run.toml image is no longer readable', async () => {
    const ws = await workspace('restore-run-check');
    const run = join(ws.dir, 'run.toml');
    await writeFile(run, `[[images]]\nimage = "${reg.host}/conf/run-denied:v1"\n`);
    await writeFile(join(ws.layers, 'group.toml'), GROUP);
    await writeFile(
      join(ws.layers, 'analyzed.toml'),
      `[run-image]\nreference = "${reg.host}/conf/run-denied@sha256:${'0'.repeat(64)}"\nimage = "${reg.host}/conf/run-denied:v1"\n`,
    );
    const denied = await phase('restorer', ['-layers', ws.layers, '-run', run]);
    expect(denied.code).toBe(1);
    expect(denied.err).toContain(`selected run image '${reg.host}/conf/run-denied:v1' is not accessible`);
    // Platform API 0.13 has no -run and no such check.
    const old = await phase('restorer', ['-layers', ws.layers], {
      CNB_PLATFORM_API: '0.13',
      CNB_RUN_PATH: run,
    });
    expect(old.code, old.err).toBe(0);
  });

  it('the exporter records the run.toml entry holding the chosen image (image and mirrors) in the label', async () => {
    const ws = await workspace('export-run-label');
    const run = join(ws.dir, 'run.toml');
    await writeFile(
      run,
      `[[images]]\nimage = "${other.host}/conf/run:v1"\nmirrors = ["${reg.host}/conf/run-ok:v1"]\n`,
    );
    const a = await phase('analyzer', ['-layers', ws.layers, '-run', run, `${reg.host}/conf/app-label`]);
    expect(a.code, a.err).toBe(0);
    await detectAndBuild(ws);
    const image = `${reg.host}/conf/app-label:latest`;
    const e = await phase('exporter', [...exportFlags(ws), '-run', run, image]);
    expect(e.code, e.err).toBe(0);
    const label = JSON.parse((await registryConfig(image)).config.Labels['io.buildpacks.lifecycle.metadata']);
    expect(label.runImage.image).toBe(`${other.host}/conf/run:v1`);
    expect(label.runImage.mirrors).toEqual([`${reg.host}/conf/run-ok:v1`]);
    // The reference names where the run image was read: the mirror.
    expect(label.runImage.reference).toMatch(new RegExp(`^${reg.host}/conf/run-ok@sha256:`));
    expect(e.out).toMatch(
      new RegExp(`Adding layer 'conf/cacher:runtime'[\\s\\S]*Saving ${image}\\.\\.\\.\\n\\*\\*\\* Images`),
    );
  });
});

describe('experimental mode (analyzer_test.go "layout case")', () => {
  const layoutArgs = (ws: Workspace, layoutDir: string) => [
    '-layers',
    ws.layers,
    '-layout',
    '-layout-dir',
    layoutDir,
    '-run-image',
    'example.test/conf/run:v1',
    'example.test/conf/app:v1',
  ];

  it('refuses -layout by default (CNB_EXPERIMENTAL_MODE=error), warns with warn, says nothing with quiet', async () => {
    const ws = await workspace('experimental');
    const layoutDir = join(ws.dir, 'layout-repo');
    const runDir = layoutPathFor(layoutDir, 'example.test/conf/run:v1');
    await createRunImage({ store: await openLayoutStore(runDir, { create: true }), tag: 'v1' });

    const refused = await phase('analyzer', layoutArgs(ws, layoutDir));
    expect(refused.code, refused.err).toBe(1);
    expect(refused.err).toContain("Platform requested experimental feature 'export to OCI layout format'");
    expect(refused.err).toContain('experimental features are disabled by CNB_EXPERIMENTAL_MODE=error');

    const warned = await phase('analyzer', layoutArgs(ws, layoutDir), { CNB_EXPERIMENTAL_MODE: 'warn' });
    expect(warned.code, warned.err).toBe(0);
    expect(warned.err).toContain("Platform requested experimental feature 'export to OCI layout format'");

    const quiet = await phase('analyzer', layoutArgs(ws, layoutDir), { CNB_EXPERIMENTAL_MODE: 'quiet' });
    expect(quiet.code, quiet.err).toBe(0);
    expect(quiet.err).toBe('');

    const exporter = await phase('exporter', [
      ...exportFlags(ws),
      '-layout',
      '-layout-dir',
      layoutDir,
      'example.test/conf/app:v1',
    ]);
    expect(exporter.code).toBe(1);
    expect(exporter.err).toContain('experimental features are disabled by CNB_EXPERIMENTAL_MODE=error');
  });
});

describe('OCI layout mode, phase by phase and in the creator (analyzer_test.go, exporter_test.go)', () => {
  it('maps names to <layout-dir>/<registry>/<repo>/<tag> in every phase; analyzed.toml records <path>@<digest>; the second build finds the first', async () => {
    const ws = await workspace('layout');
    const layoutDir = join(ws.dir, 'layout-repo');
    const env = { CNB_EXPERIMENTAL_MODE: 'warn', CNB_USE_LAYOUT: 'true', CNB_LAYOUT_DIR: layoutDir };
    const runDir = join(layoutDir, 'example.test', 'conf', 'run', 'v1');
    await createRunImage({ store: await openLayoutStore(runDir, { create: true }), tag: 'v1' });
    const appDir = join(layoutDir, 'example.test', 'conf', 'app', 'v1');
    const app = 'example.test/conf/app:v1';

    const build = async () => {
      const a = await phase(
        'analyzer',
        ['-layers', ws.layers, '-run-image', 'example.test/conf/run:v1', app],
        env,
      );
      expect(a.code, a.err).toBe(0);
      const analyzed = await readAnalyzedFile(join(ws.layers, 'analyzed.toml'));
      expect(analyzed?.['run-image']?.reference).toMatch(new RegExp(`^${runDir}@sha256:[0-9a-f]{64}$`));
      await writeFile(join(ws.layers, 'group.toml'), GROUP);
      const r = await phase('restorer', ['-layers', ws.layers], env);
      expect(r.code, r.err).toBe(0);
      await detectAndBuild(ws, env);
      const e = await phase('exporter', [...exportFlags(ws), app], env);
      expect(e.code, e.err).toBe(0);
      return { analyzed, analyzer: a, restorer: r, exporter: e };
    };

    const first = await build();
    expect(first.analyzed?.image).toBeUndefined();
    expect(first.analyzer.out).toContain(`Previous image with name "${app}" not found`);
    const firstDigest = (await readReport(join(ws.layers, 'report.toml'))).image.digest;
    // The app image is its own layout, tagged with the reference's tag; skopeo reads it.
    expect((await openLayoutStore(appDir).then((s) => s.resolve('v1')))?.digest).toBe(firstDigest);
    const { stdout } = await execa('skopeo', ['inspect', `oci:${appDir}:v1`]);
    expect(JSON.parse(stdout).Digest).toBe(firstDigest);

    const second = await build();
    expect(second.analyzed?.image?.reference).toBe(`${appDir}@${firstDigest}`);
    expect(second.restorer.out).toContain('Restoring metadata for "conf/cacher:runtime" from app image');
    expect(second.exporter.out).toContain("Reusing layer 'conf/cacher:runtime'");
    expect(second.exporter.out).toContain(`Reusing layers from image '${appDir}'`);
    expect(second.exporter.out).toContain(`Using app image: ${appDir}`);
    expect(second.exporter.out).toContain(`Saving ${app}...`);

    // The creator takes the same names and paths.
    const cws = await workspace('layout-creator');
    const c = await phase(
      'creator',
      [
        ...dirFlags(cws),
        '-buildpacks',
        BUILDPACKS,
        '-order',
        cws.order,
        '-run-image',
        'example.test/conf/run:v1',
        app,
      ],
      env,
    );
    expect(c.code, c.err).toBe(0);
    expect(c.out).toContain("Reusing layer 'conf/cacher:runtime'");
    const created = await readAnalyzedFile(join(cws.layers, 'analyzed.toml'));
    expect(created?.image?.reference).toMatch(new RegExp(`^${appDir}@sha256:`));
  });
});

describe('caches as the reference writes them (restorer_test.go, exporter_test.go)', () => {
  /** A cache dir in the reference lifecycle's layout: <dir>/committed/<diffID>.tar and the metadata file. */
  async function referenceCache(
    dir: string,
    layers: { bp: string; layer: string; tar: Buffer; sha?: string }[],
  ) {
    const committed = join(dir, 'committed');
    await mkdir(committed, { recursive: true });
    const byBp = new Map<string, Record<string, unknown>>();
    for (const l of layers) {
      const sha = l.sha ?? sha256(l.tar);
      await writeFile(join(committed, `${sha}.tar`), l.tar);
      const entry = byBp.get(l.bp) ?? {};
      entry[l.layer] = { sha, data: null, build: false, launch: false, cache: true };
      byBp.set(l.bp, entry);
    }
    const meta = { buildpacks: [...byBp].map(([key, ls]) => ({ key, version: '1.0.0', layers: ls })) };
    await writeFile(join(committed, 'io.buildpacks.lifecycle.cache.metadata'), JSON.stringify(meta, null, 2));
  }

  /** A tar as the reference caches a layer: layers/<escaped bp>/<layer>/data. */
  async function layerTar(bpDir: string, layer: string, content: string): Promise<Buffer> {
    const src = await mkdtemp(join(root, 'tar-'));
    await mkdir(join(src, 'layers', bpDir, layer), { recursive: true });
    await writeFile(join(src, 'layers', bpDir, layer, 'data'), content);
    return execFileSync('tar', [
      '-cf',
      '-',
      '--owner=0',
      '--group=0',
      '--mtime=2024-01-01',
      '-C',
      src,
      'layers',
    ]);
  }

  it('restores from <dir>/committed for the build platform; a corrupted layer is skipped with a warning', async () => {
    const ws = await workspace('ref-cache-restore');
    const cache = join(ws.dir, 'cache');
    const good = await layerTar('conf_cacher', 'deps', 'from the reference cache\n');
    const bad = await layerTar('conf_other', 'broken', 'x\n');
    await referenceCache(cache, [
      { bp: 'conf/cacher', layer: 'deps', tar: good },
      { bp: 'conf/other', layer: 'broken', tar: bad, sha: `sha256:${'5'.repeat(64)}` },
    ]);
    await writeFile(
      join(ws.layers, 'group.toml'),
      `${GROUP}\n[[group]]\nid = "conf/other"\nversion = "1.0.0"\napi = "0.10"\n`,
    );
    await writeFile(
      join(ws.layers, 'analyzed.toml'),
      '[run-image]\nreference = "example.test/run@sha256:' +
        '0'.repeat(64) +
        '"\n[run-image.target]\nos = "linux"\narch = "amd64"\n',
    );
    const r = await phase('restorer', ['-layers', ws.layers, '-cache-dir', cache]);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toContain('Restoring metadata for "conf/cacher:deps" from cache');
    expect(r.out).toContain('Restoring data for "conf/cacher:deps" from cache');
    expect(await readFile(join(ws.layers, 'conf_cacher', 'deps', 'data'), 'utf8')).toBe(
      'from the reference cache\n',
    );
    expect(await readFile(join(ws.layers, 'conf_cacher', 'deps.sha'), 'utf8')).toBe(sha256(good));
    expect(r.err).toMatch(/Skipping restore for layer conf\/other:broken: /);
    await expect(stat(join(ws.layers, 'conf_other', 'broken'))).rejects.toThrow();
  });

  it('the exporter skips reuse of a corrupted cached layer ("Skipping reuse") and caches it afresh', async () => {
    const ws = await workspace('ref-cache-corrupt');
    await writeFile(
      join(ws.layers, 'analyzed.toml'),
      `[run-image]\nreference = "${reg.host}/conf/run-ok:v1"\n[run-image.target]\nos = "linux"\narch = "amd64"\n`,
    );
    await detectAndBuild(ws);
    // What the exporter caches for conf/cacher:deps, learnt from a scratch export.
    const scratch = join(ws.dir, 'scratch-cache');
    const s = await phase('exporter', [
      ...exportFlags(ws),
      '-cache-dir',
      scratch,
      `${reg.host}/conf/app-cache:latest`,
    ]);
    expect(s.code, s.err).toBe(0);
    const scratchMeta = JSON.parse(
      await readFile(
        join(scratch, 'linux-amd64', 'committed', 'io.buildpacks.lifecycle.cache.metadata'),
        'utf8',
      ),
    );
    const sha: string = scratchMeta.buildpacks[0].layers.deps.sha;

    const cache = join(ws.dir, 'cache');
    const garbage = Buffer.from('not the layer\n');
    await referenceCache(cache, [{ bp: 'conf/cacher', layer: 'deps', tar: garbage, sha }]);
    const e = await phase('exporter', [
      ...exportFlags(ws),
      '-cache-dir',
      cache,
      `${reg.host}/conf/app-cache:latest`,
    ]);
    expect(e.code, e.err).toBe(0);
    expect(e.err).toContain(
      `Skipping reuse for layer conf/cacher:deps: expected layer contents to have SHA '${sha}'; found '${sha256(garbage)}'`,
    );
    expect(e.out).toContain("Adding cache layer 'conf/cacher:deps'");
    const fresh = await readFile(join(cache, 'linux-amd64', 'committed', `${sha}.tar`));
    expect(sha256(fresh)).toBe(sha);

    // An intact layer in a reference-layout cache is reused (linked into packfarm's own layout).
    const intact = join(ws.dir, 'intact-cache');
    await referenceCache(intact, [{ bp: 'conf/cacher', layer: 'deps', tar: fresh }]);
    const again = await phase('exporter', [
      ...exportFlags(ws),
      '-cache-dir',
      intact,
      `${reg.host}/conf/app-cache:latest`,
    ]);
    expect(again.code, again.err).toBe(0);
    expect(again.out).toContain("Reusing cache layer 'conf/cacher:deps'");
    expect(again.err).not.toContain('Skipping reuse');
    const linked = await stat(join(intact, 'linux-amd64', 'committed', `${sha}.tar`));
    expect(linked.nlink).toBe(2);
  });

  it('a cache image with nothing cached has one layer, the empty tar', async () => {
    const ws = await workspace('empty-cache-image');
    await writeFile(
      join(ws.layers, 'analyzed.toml'),
      `[run-image]\nreference = "${reg.host}/conf/run-ok:v1"\n[run-image.target]\nos = "linux"\narch = "amd64"\n`,
    );
    await writeFile(join(ws.layers, 'group.toml'), GROUP);
    await mkdir(join(ws.layers, 'config'));
    await writeFile(join(ws.layers, 'config', 'metadata.toml'), '');
    const cacheImage = `${reg.host}/conf/cache-empty:latest`;
    const e = await phase('exporter', [
      ...exportFlags(ws),
      '-cache-image',
      cacheImage,
      `${reg.host}/conf/app-empty:latest`,
    ]);
    expect(e.code, e.err).toBe(0);
    expect((await registryConfig(cacheImage)).rootfs.diff_ids).toEqual([sha256(Buffer.alloc(1024))]);
  });
});

describe('log lines platforms read', () => {
  it('restorer without a cache warns "No cached data will be used, no cache specified."', async () => {
    const ws = await workspace('no-cache');
    await writeFile(join(ws.layers, 'group.toml'), GROUP);
    const r = await phase('restorer', ['-layers', ws.layers]);
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain('No cached data will be used, no cache specified.');
  });

  it('the analyzer warns about -launch-cache without -daemon and parallel export without a cache', async () => {
    const ws = await workspace('warnings');
    const r = await phase(
      'analyzer',
      [
        '-layers',
        ws.layers,
        '-launch-cache',
        join(ws.dir, 'lc'),
        '-run-image',
        `${reg.host}/conf/run-ok:v1`,
        `${reg.host}/conf/app-warn`,
      ],
      { CNB_PARALLEL_EXPORT: 'true' },
    );
    expect(r.code, r.err).toBe(0);
    expect(r.err).toContain('Ignoring -launch-cache, only intended for use with -daemon');
    expect(r.err).toContain(
      'Parallel export has been enabled, but it has not taken effect because no cache has been specified.',
    );
  });

  it('the detector prints the group, the creator the reference phase headers', async () => {
    const ws = await workspace('lines');
    const { detect } = await detectAndBuild(ws);
    expect(detect.out).toMatch(/^conf\/cacher 1\.0\.0$/m);
    const c = await phase('creator', [
      ...dirFlags(ws),
      '-buildpacks',
      BUILDPACKS,
      '-order',
      ws.order,
      '-run-image',
      `${reg.host}/conf/run-ok:v1`,
      `${reg.host}/conf/app-lines:latest`,
    ]);
    expect(c.code, c.err).toBe(0);
    expect(c.out).toContain(`Saving ${reg.host}/conf/app-lines:latest...`);
    const headers = c.out.split('\n').filter((l) => l.startsWith('===> '));
    expect(headers).toEqual([
      '===> ANALYZING',
      '===> DETECTING',
      '===> RESTORING',
      '===> BUILDING',
      '===> EXPORTING',
    ]);
  });
});

describe('as a separate process, configured by CNB_* variables only', () => {
  let compiled: { dir: string; cleanup: () => Promise<void> };
  beforeAll(async () => {
    compiled = await compileSrcForChildProcesses();
  }, 120_000);
  afterAll(async () => {
    await compiled?.cleanup();
  });

  async function analyzerProcess(env: Record<string, string>, image: string) {
    const main = pathToFileURL(join(compiled.dir, 'cli', 'main.js')).href;
    const script = `import { main } from ${JSON.stringify(main)}; process.exitCode = await main(process.argv.slice(1));`;
    return execa(process.execPath, ['--input-type=module', '-e', script, 'lifecycle', 'analyzer', image], {
      env: {
        PATH: process.env.PATH ?? '',
        CNB_PLATFORM_API: '0.14',
        CNB_REGISTRY_AUTH: auth,
        CNB_INSECURE_REGISTRIES: reg.host,
        ...env,
      },
      extendEnv: false,
      reject: false,
    });
  }

  it('exits 1 for a refused experimental feature, 3 without a readable run image, 0 with the file owned by the user', async () => {
    const ws = await workspace('process');
    const run = join(ws.dir, 'run.toml');
    await writeFile(run, `[[images]]\nimage = "${reg.host}/conf/run-denied:v1"\n`);
    const base = { CNB_LAYERS_DIR: ws.layers, CNB_RUN_PATH: run };
    const layout = await analyzerProcess(
      {
        ...base,
        CNB_USE_LAYOUT: 'true',
        CNB_LAYOUT_DIR: join(ws.dir, 'layout'),
        CNB_RUN_IMAGE: 'example.test/run',
      },
      'example.test/app',
    );
    expect(layout.exitCode).toBe(1);
    expect(layout.stderr).toContain('experimental features are disabled by CNB_EXPERIMENTAL_MODE=error');
    const none = await analyzerProcess(base, `${reg.host}/conf/app-process`);
    expect(none.exitCode).toBe(3);
    expect(none.stderr).toContain('failed to find accessible run image');
    await writeFile(
      run,
      `[[images]]\nimage = "${reg.host}/conf/run-denied:v1"\nmirrors = ["${reg.host}/conf/run-ok:v1"]\n`,
    );
    const ok = await analyzerProcess(
      { ...base, CNB_USER_ID: String(USER.uid), CNB_GROUP_ID: String(USER.gid) },
      `${reg.host}/conf/app-process`,
    );
    expect(ok.exitCode, ok.stderr).toBe(0);
    expect(await ownerOf(join(ws.layers, 'analyzed.toml'))).toBe('2222:3333');
    expect((await readAnalyzedFile(join(ws.layers, 'analyzed.toml')))?.['run-image']?.image).toBe(
      `${reg.host}/conf/run-ok:v1`,
    );
  });
});
