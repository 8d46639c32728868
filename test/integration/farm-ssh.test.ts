import { mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildReport } from '../../src/api/build.js';
import type { BuildEvent } from '../../src/api/events.js';
import { buildOnFarm } from '../../src/farm/build.js';
import type { FarmNodeConfig } from '../../src/farm/config.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { publishIndex } from '../../src/image/publish-index.js';
import { createRegistryStore } from '../../src/image/registry-store.js';
import { MediaType } from '../../src/oci/media-types.js';
import type { Platform } from '../../src/oci/platform.js';
import { parseReference } from '../../src/oci/reference.js';
import { isPackfarmError } from '../../src/util/errors.js';
import { runCli, useEnv } from '../helpers/cli.js';
import { compileSrcForChildProcesses } from '../helpers/compiled-src.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner, createRunImage } from '../helpers/run-image.js';
import { type SshFarm, startSshNodes } from '../helpers/ssh-nodes.js';

/**
 * A farm of real SSH nodes: three OpenSSH servers on 127.0.0.2–4 (generated host and user keys, a private
 * known_hosts, each node its own data dir) running this checkout's packfarm (a compiled copy of src/), plus
 * the local node. Builds go through buildOnFarm (the `build --farm` path) against a real registry; podman
 * runs what was built.
 *
 * The nodes are all this amd64 machine, so the host executor builds linux/amd64 and linux/386 natively on
 * each; `platforms` restrictions in the farm config force where each target may go.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const probeBp = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'farm', 'farm_probe', '1.0.0');
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };
const I386: Platform = { os: 'linux', architecture: '386' };

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let ssh: SshFarm;
let compiled: { dir: string; cleanup: () => Promise<void> };
let runIndex: string;
let restoreEnv: (() => void) | undefined;

async function makeApp(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, 'apps', name);
  await mkdir(dir, { recursive: true });
  for (const [rel, text] of Object.entries(files)) await writeFile(join(dir, rel), text);
  return dir;
}

const node = (i: number, extra: Partial<FarmNodeConfig> = {}): FarmNodeConfig => ({
  ...ssh.nodes[i]!.config,
  ...extra,
});

interface FarmBuild {
  report: BuildReport;
  events: BuildEvent[];
}

async function farmBuild(
  image: string,
  app: string,
  nodes: FarmNodeConfig[],
  extra: { platforms?: string[]; env?: string[]; publish?: boolean; onEvent?: (e: BuildEvent) => void } = {},
): Promise<FarmBuild> {
  const events: BuildEvent[] = [];
  const report = await buildOnFarm(
    {
      image,
      path: app,
      buildpacks: [probeBp],
      runImage: runIndex,
      insecureRegistries: [registry.host],
      publish: extra.publish ?? true,
      platforms: extra.platforms ?? ['linux/amd64,linux/386'],
      env: extra.env ?? [],
    },
    {
      nodes,
      onEvent: (e) => {
        events.push(e);
        extra.onEvent?.(e);
      },
    },
  );
  return { report, events };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-farm-'));
  restoreEnv = useEnv({ PACKFARM_HOME: join(root, 'coordinator'), XDG_CONFIG_HOME: join(root, 'config') });
  compiled = await compileSrcForChildProcesses();
  const entry = join(compiled.dir, 'packfarm.mjs');
  await writeFile(
    entry,
    "import { main } from './cli/main.js';\nprocess.exitCode = await main(process.argv.slice(2));\n",
  );
  ssh = await startSshNodes({ dir: join(root, 'ssh'), count: 3, entry });
  registry = await startRegistry();
  podman = await createPodmanRunner();
  const run = createRegistryStore(parseReference(`${registry.host}/run`), {
    insecureRegistries: [registry.host],
  });
  const images = [];
  for (const p of [AMD64, I386])
    images.push(await createRunImage({ store: run, tag: `v1-${p.architecture}`, platform: p }));
  await publishIndex({ store: run, images: images.map((i) => i.digest), tags: ['v1'] });
  runIndex = `${registry.host}/run:v1`;
}, 180_000);

afterAll(async () => {
  restoreEnv?.();
  await ssh?.stop();
  await podman?.cleanup();
  await registry?.stop();
  await compiled?.cleanup();
  await rm(root, { recursive: true, force: true });
});

describe('farm config and nodes over ssh', () => {
  it('farm create / node add / ls: every node reachable with its version, platforms and capacity', async () => {
    expect((await runCli('farm', 'create', 'lab', 'local')).code).toBe(0);
    for (const n of ssh.nodes.slice(0, 2)) {
      const c = n.config;
      const r = await runCli(
        'farm',
        'node',
        'add',
        'lab',
        c.uri,
        '--name',
        n.name,
        '--identity',
        c.identity!,
        '--command',
        c.command!,
        '--max-jobs',
        '2',
        ...c.ssh_options!.flatMap((o) => ['--ssh-option', o]),
      );
      expect(r.code, r.err).toBe(0);
    }
    const ls = await runCli('farm', 'ls', '--json');
    expect(ls.code, ls.err).toBe(0);
    const farms = JSON.parse(ls.out) as Array<{
      name: string;
      default: boolean;
      nodes: Array<Record<string, unknown>>;
    }>;
    expect(farms.map((f) => [f.name, f.default])).toEqual([['lab', true]]);
    const nodes = farms[0]!.nodes;
    expect(nodes.map((n) => [n.name, n.reachable, n.packfarm])).toEqual([
      ['local', true, '0.1.0'],
      ['node1', true, '0.1.0'],
      ['node2', true, '0.1.0'],
    ]);
    for (const n of nodes) {
      expect(n.native).toEqual(['linux/amd64', 'linux/386']);
      expect(n.runningJobs).toBe(0);
    }
    expect(nodes[1]!.capacity).toBe(2);
    const human = await runCli('farm', 'ls');
    expect(human.out).toContain('node1  ssh://root@127.0.0.2:');
    expect(human.out).toMatch(/native: {3}linux\/amd64, linux\/386/);
  }, 120_000);

  it('farm import-podman creates the same farm from the podman files', async () => {
    const fixtures = join(repoRoot, 'test', 'fixtures', 'podman');
    process.env.CONTAINERS_CONF = join(fixtures, 'containers.conf');
    process.env.PODMAN_CONNECTIONS_CONF = join(root, 'no-such-podman-connections.json');
    try {
      const r = await runCli('farm', 'import-podman', 'mixed', '--json');
      expect(r.code, r.err).toBe(0);
      expect(JSON.parse(r.out)).toMatchObject({ farm: 'mixed', skipped: [{ name: 'local-sock' }] });
      // podman's hosts are not reachable from here (and tests stay on loopback): read what was written.
      const { readFarms, farmsFilePath } = await import('../../src/farm/config.js');
      const file = await readFarms(farmsFilePath(process.env));
      expect(file.farms.mixed?.nodes).toEqual([
        { name: 'amd-box', uri: 'ssh://root@amd.example' },
        { name: 'arm-box', uri: 'ssh://builder@10.0.0.7:2222', identity: '/home/me/.ssh/id_arm' },
      ]);
      expect((await runCli('farm', 'rm', 'mixed')).code).toBe(0);
    } finally {
      delete process.env.CONTAINERS_CONF;
      delete process.env.PODMAN_CONNECTIONS_CONF;
    }
  }, 120_000);

  it('names the node when its host key is wrong or its user key is refused', async () => {
    const wrongKnown = join(root, 'wrong_known_hosts');
    const other = join(root, 'other_host_key');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', other]);
    const n = ssh.nodes[0]!;
    await writeFile(
      wrongKnown,
      `[${n.address}]:${n.port} ${(await readFile(`${other}.pub`, 'utf8')).trim()}\n`,
    );
    const badHost = node(0, {
      name: 'spoofed',
      ssh_options: [
        `UserKnownHostsFile=${wrongKnown}`,
        'GlobalKnownHostsFile=/dev/null',
        'StrictHostKeyChecking=yes',
      ],
    });
    const strangerKey = join(root, 'stranger_key');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', strangerKey]);
    const badUser = node(1, { name: 'locked', identity: strangerKey });

    const app = await makeApp('keys', { 'app.txt': 'keys\n' });
    for (const [cfg, code, re] of [
      [
        badHost,
        'NODE_HOST_KEY',
        /node spoofed \(ssh:\/\/root@127\.0\.0\.2:\d+\): ssh refused the node's host key: .*Host key verification failed/,
      ],
      [
        badUser,
        'NODE_AUTH',
        /node locked \(ssh:\/\/root@127\.0\.0\.3:\d+\): the node refused the login: .*Permission denied/,
      ],
    ] as const) {
      let err: unknown;
      try {
        await farmBuild(`${registry.host}/keys:latest`, app, [cfg], { platforms: ['linux/amd64'] });
      } catch (e) {
        err = e;
      }
      // The only node is unreachable: the error lists it with ssh's reason.
      expect(isPackfarmError(err, 'NO_REACHABLE_NODE')).toBe(true);
      expect((err as Error).message).toMatch(re);
      const ls = await import('../../src/farm/manage.js');
      const [status] = await Promise.all([ls.connectAll([cfg], process.env)]);
      expect((status[0]!.error as { code: string }).code).toBe(code);
    }
    expect(
      await store('keys')
        .listTags()
        .catch(() => []),
    ).toEqual([]);
  }, 60_000);
});

function store(repo: string) {
  return createRegistryStore(parseReference(`${registry.host}/${repo}`), {
    insecureRegistries: [registry.host],
  });
}

describe('builds on the farm', () => {
  let app: string;
  let first: FarmBuild;

  it('places each target where --platforms allows, publishes one index, podman runs each arch', async () => {
    app = await makeApp('app', { 'app.txt': 'one\n' });
    const nodes = [node(0, { platforms: ['linux/386'] }), node(1, { platforms: ['linux/amd64'] })];
    first = await farmBuild(`${registry.host}/app:latest`, app, nodes);
    const r = first.report;
    expect(r.index).toBe(true);
    expect(r.mediaType).toBe(MediaType.ociIndex);
    expect(r.targets.map((t) => [t.platform, t.runs, t.farm?.node])).toEqual([
      ['linux/386', 'native', 'node1'],
      ['linux/amd64', 'native', 'node2'],
    ]);
    for (const t of r.targets) {
      expect(t.tags).toEqual([]);
      expect(t.farm?.attempts).toEqual([]);
      expect(t.farm?.bytesSent).toBeGreaterThan(0);
      expect(t.farm?.blobsSent).toBe(3); // the app as its index and one group (app.txt is small), the buildpack
      expect(t.farm?.bytesReceived).toBeGreaterThan(0);
    }
    const placed = first.events.filter((e) => e.type === 'placed');
    expect(placed.map((e) => [e.target, e.type === 'placed' && e.node])).toEqual(
      expect.arrayContaining([
        ['linux/386', 'node1'],
        ['linux/amd64', 'node2'],
      ]),
    );
    // Node events come back tagged with their target.
    expect(
      first.events.some(
        (e) =>
          e.type === 'output' && e.target === 'linux/386' && e.line.includes('probe: building for linux/386'),
      ),
    ).toBe(true);

    const raw = await execa('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      `docker://${registry.host}/app:latest`,
    ]);
    const index = JSON.parse(raw.stdout) as {
      manifests: Array<{ digest: string; platform: { architecture: string } }>;
    };
    expect(index.manifests.map((m) => m.platform.architecture)).toEqual(['386', 'amd64']);
    expect(index.manifests.map((m) => m.digest)).toEqual(r.targets.map((t) => t.digest));
    expect((await store('app').listTags()).sort()).toEqual(['latest']);
    for (const arch of ['386', 'amd64']) {
      const run = await podman.run(`${registry.host}/app:latest`, { flags: ['--arch', arch] });
      expect(run.stdout).toContain(`target=linux/${arch} app=one`);
    }
  }, 300_000);

  it('a second build sends no app blob and gives the same index, whatever the node order', async () => {
    const nodes = [node(1, { platforms: ['linux/amd64'] }), node(0, { platforms: ['linux/386'] })];
    const again = await farmBuild(`${registry.host}/app:latest`, app, nodes);
    expect(again.report.digest).toBe(first.report.digest);
    for (const t of again.report.targets) {
      expect(t.farm?.blobsSent).toBe(0);
      expect(t.layerCounts.added).toBe(0);
    }
  }, 300_000);
  it('two targets on one node at once: each blob goes there once', async () => {
    const pairApp = await makeApp('one-node', { 'app.txt': 'together\n' });
    const { report } = await farmBuild(`${registry.host}/one-node:latest`, pairApp, [
      node(0, { max_jobs: 2 }),
    ]);
    expect(report.targets.map((t) => t.farm?.node)).toEqual(['node1', 'node1']);
    // The buildpack is on node1 from earlier builds; the new app (its index and one group) goes once,
    // whichever target carried it (without the per-connection dedupe both targets' have/want would send it: 4).
    expect(report.targets.reduce((a, t) => a + (t.farm?.blobsSent ?? 0), 0)).toBe(2);
  }, 300_000);

  it('a file changed to the same size reaches the image', async () => {
    await writeFile(join(app, 'app.txt'), 'two\n');
    const nodes = [node(0, { platforms: ['linux/386'] }), node(1, { platforms: ['linux/amd64'] })];
    const changed = await farmBuild(`${registry.host}/app:latest`, app, nodes);
    expect(changed.report.digest).not.toBe(first.report.digest);
    for (const t of changed.report.targets) expect(t.farm?.blobsSent).toBe(2); // the app's new group and index only
    const run = await podman.run(`${registry.host}/app:latest`, { flags: ['--arch', '386'] });
    expect(run.stdout).toContain('target=linux/386 app=two');
  }, 300_000);

  it('packfarm build --farm NAME (the CLI) reports the node and the bytes per target', async () => {
    const cliApp = await makeApp('cli', { 'app.txt': 'cli\n' });
    const r = await runCli(
      'build',
      `${registry.host}/cli:latest`,
      '--path',
      cliApp,
      '--buildpack',
      probeBp,
      '--run-image',
      runIndex,
      '--insecure-registry',
      registry.host,
      '--publish',
      '--platform',
      'linux/amd64,linux/386',
      '--farm',
      'lab',
    );
    expect(r.code, r.err + r.out).toBe(0);
    expect(r.out).toMatch(/linux\/386: sha256:[0-9a-f]{64} \(native/);
    expect(r.out).toMatch(/node: {5}(local|node1|node2) \(native\); sent [\d.]+ \w*B, received [\d.]+ \w*B/);
    // One target on a farm: a plain image under the tag, as without --farm.
    const one = await runCli(
      'build',
      `${registry.host}/cli-one:latest`,
      '--path',
      cliApp,
      '--buildpack',
      probeBp,
      '--run-image',
      runIndex,
      '--insecure-registry',
      registry.host,
      '--publish',
      '--platform',
      'linux/386',
      '--farm',
      'lab',
      '--json',
    );
    expect(one.code, one.err).toBe(0);
    const oneReport = JSON.parse(one.out) as BuildReport;
    expect(oneReport.index).toBe(false);
    expect(oneReport.targets[0]?.tags).toEqual([`${registry.host}/cli-one:latest`]);
    const resolved = await store('cli-one').resolve('latest');
    expect(resolved?.digest).toBe(oneReport.digest);
    expect(resolved?.mediaType).toBe(MediaType.ociManifest);
    const missing = await runCli('build', `${registry.host}/cli:latest`, '--path', cliApp, '--farm', 'nope');
    expect(missing.code).not.toBe(0);
    expect(missing.err).toContain('no farm named "nope"');
  }, 300_000);
});

describe('faults', () => {
  it('a node whose serve process is killed mid-build: the target is retried on another node', async () => {
    const app = await makeApp('retry', { 'app.txt': 'retry\n' });
    const hold = join(root, 'hold');
    await mkdir(hold, { recursive: true });
    const nodes = [node(0, { max_jobs: 1 }), node(1, { max_jobs: 1 })];
    const placed = new Map<string, string>();
    const building = farmBuild(`${registry.host}/retry:latest`, app, nodes, {
      env: [`FARM_HOLD_DIR=${hold}`],
      onEvent: (e) => {
        if (e.type === 'placed') placed.set(e.target, e.node);
      },
    });
    // Wait until the 386 target's buildpack runs (on whichever node got it), then kill that node's serve.
    let started: string | undefined;
    for (let i = 0; i < 1200 && !started; i++) {
      started = (await readdir(hold)).find((f) => f.startsWith('started-386-'));
      if (!started) await new Promise((r) => setTimeout(r, 100));
    }
    expect(started).toBeDefined();
    const victim = ssh.nodes.find((n) => n.name === placed.get('linux/386'))!;
    const pids = await victim.servePids();
    process.kill(pids[pids.length - 1]!, 'SIGKILL');
    await writeFile(join(hold, 'release'), '');
    const { report, events } = await building;

    const t386 = report.targets.find((t) => t.platform === 'linux/386')!;
    expect(t386.farm?.node).not.toBe(victim.name);
    expect(t386.farm?.attempts).toEqual([
      { node: victim.name, code: 'NODE_LOST', message: expect.stringContaining(`node ${victim.name}`) },
    ]);
    expect(events.some((e) => e.type === 'retry' && e.target === 'linux/386' && e.node === victim.name)).toBe(
      true,
    );
    expect((await store('retry').listTags()).sort()).toEqual(['latest']);
    // The killed node's job and its buildpack process went with it.
    const bpPid = Number(started!.split('-').pop());
    let alive = true;
    for (let i = 0; i < 50 && alive; i++) {
      try {
        process.kill(bpPid, 0);
        await new Promise((r) => setTimeout(r, 100));
      } catch {
        alive = false;
      }
    }
    expect(alive).toBe(false);
  }, 300_000);

  it('SIGTERM on the coordinator cancels every remote job: buildpacks killed, job dirs removed, no tag', async () => {
    const app = await makeApp('sigterm', { 'app.txt': 'term\n' });
    const hold = join(root, 'hold-term');
    await mkdir(hold, { recursive: true });
    const cfg = (i: number) => {
      const c = ssh.nodes[i]!.config;
      return [
        '--identity',
        c.identity!,
        '--command',
        c.command!,
        ...c.ssh_options!.flatMap((o) => ['--ssh-option', o]),
      ];
    };
    expect((await runCli('farm', 'create', 'pair')).code).toBe(0);
    expect(
      (
        await runCli(
          'farm',
          'node',
          'add',
          'pair',
          ssh.nodes[0]!.config.uri,
          '--name',
          'node1',
          '--platforms',
          'linux/386',
          ...cfg(0),
        )
      ).code,
    ).toBe(0);
    expect(
      (
        await runCli(
          'farm',
          'node',
          'add',
          'pair',
          ssh.nodes[1]!.config.uri,
          '--name',
          'node2',
          '--platforms',
          'linux/amd64',
          ...cfg(1),
        )
      ).code,
    ).toBe(0);
    const child = execa(
      process.execPath,
      [
        join(compiled.dir, 'packfarm.mjs'),
        'build',
        `${registry.host}/sigterm:latest`,
        '--path',
        app,
        '--buildpack',
        probeBp,
        '--run-image',
        runIndex,
        '--insecure-registry',
        registry.host,
        '--publish',
        '--platform',
        'linux/amd64,linux/386',
        '--farm',
        'pair',
        '--env',
        `FARM_HOLD_DIR=${hold}`,
      ],
      { reject: false, env: { ...process.env } },
    );
    let started: string[] = [];
    for (let i = 0; i < 1200 && started.length < 2; i++) {
      started = (await readdir(hold)).filter((f) => f.startsWith('started-'));
      if (started.length < 2) await new Promise((r) => setTimeout(r, 100));
    }
    expect(started).toHaveLength(2);
    child.kill('SIGTERM');
    const done = await child;
    expect(done.exitCode, done.stdout + done.stderr).not.toBe(0);
    const pids = started.map((f) => Number(f.split('-').pop()));
    const anyAlive = () =>
      pids.some((pid) => {
        try {
          process.kill(pid, 0);
          return true;
        } catch {
          return false;
        }
      });
    for (let i = 0; i < 50 && anyAlive(); i++) await new Promise((r) => setTimeout(r, 100));
    expect(anyAlive()).toBe(false);
    for (const n of ssh.nodes.slice(0, 2)) {
      let left: string[] = ['?'];
      for (let i = 0; i < 50 && left.length > 0; i++) {
        left = await readdir(join(n.dataDir, 'farm', 'jobs')).catch(() => []);
        if (left.length > 0) await new Promise((r) => setTimeout(r, 100));
      }
      expect(left).toEqual([]);
    }
    expect(
      await store('sigterm')
        .listTags()
        .catch(() => []),
    ).toEqual([]);
  }, 300_000);

  it('all nodes for a target down: a clear error before anything runs, and no tag', async () => {
    const app = await makeApp('down', { 'app.txt': 'down\n' });
    await ssh.nodes[2]!.stop();
    let err: unknown;
    try {
      await farmBuild(`${registry.host}/down:latest`, app, [
        node(0, { platforms: ['linux/amd64'] }),
        node(2, { platforms: ['linux/386'] }),
      ]);
    } catch (e) {
      err = e;
    }
    expect(String(err)).toContain('no reachable node');
    expect(isPackfarmError(err, 'NO_NODE_FOR_PLATFORM')).toBe(true);
    const msg = (err as Error).message;
    expect(msg).toContain('no reachable node can build linux/386');
    expect(msg).toContain('node1: native linux/amd64, linux/386; emulated');
    expect(msg).toContain('restricted to linux/amd64');
    expect(msg).toMatch(
      /node3: unreachable \(node node3 \(ssh:\/\/root@127\.0\.0\.4:\d+\): ssh failed: .*Connection refused/,
    );
    expect(
      await store('down')
        .listTags()
        .catch(() => []),
    ).toEqual([]);
  }, 120_000);
});

describe('outputs and credentials', () => {
  it('writes an oci: layout from remote nodes (blobs streamed back), readable by skopeo and podman', async () => {
    const app = await makeApp('oci', { 'app.txt': 'layout\n' });
    const out = join(root, 'out-layout');
    const { report } = await farmBuild(
      `oci:${out}:app`,
      app,
      [node(0, { platforms: ['linux/386'] }), node(1, { platforms: ['linux/amd64'] })],
      {
        publish: false,
      },
    );
    expect(report.index).toBe(true);
    for (const t of report.targets) expect(t.farm?.blobsReceived).toBeGreaterThan(0);
    const layout = await openLayoutStore(out);
    expect(await layout.listTags()).toEqual(['app']);
    const raw = await execa('skopeo', ['inspect', '--raw', `oci:${out}:app`]);
    expect((JSON.parse(raw.stdout) as { manifests: unknown[] }).manifests).toHaveLength(2);
    // podman's oci: transport does not pick an index child by --arch: run each one from a registry copy.
    await execa('skopeo', [
      'copy',
      '--all',
      '--dest-tls-verify=false',
      `oci:${out}:app`,
      `docker://${registry.host}/oci-copy:app`,
    ]);
    for (const arch of ['386', 'amd64']) {
      const run = await podman.run(`${registry.host}/oci-copy:app`, { flags: ['--arch', arch] });
      expect(run.stdout).toContain(`target=linux/${arch} app=layout`);
    }
  }, 300_000);

  it('hands nodes registry credentials in memory only: nothing on their disks, nothing for buildpacks', async () => {
    const secure = await startRegistry({
      auth: 'htpasswd',
      users: [{ name: 'farmer', password: 'S3cret-farm-pw' }],
    });
    try {
      const cred = { username: 'farmer', password: 'S3cret-farm-pw' };
      const run = createRegistryStore(parseReference(`${secure.host}/run`), {
        insecureRegistries: [secure.host],
        credentials: cred,
      });
      const images = [];
      for (const p of [AMD64, I386])
        images.push(await createRunImage({ store: run, tag: `v1-${p.architecture}`, platform: p }));
      await publishIndex({ store: run, images: images.map((i) => i.digest), tags: ['v1'] });

      const dockerDir = join(root, 'docker-config');
      await mkdir(dockerDir, { recursive: true });
      const basic = Buffer.from('farmer:S3cret-farm-pw').toString('base64');
      await writeFile(
        join(dockerDir, 'config.json'),
        JSON.stringify({ auths: { [secure.host]: { auth: basic } } }),
      );
      const app = await makeApp('secret', { 'app.txt': 'secret\n' });
      const events: BuildEvent[] = [];
      // The coordinator's registry client reads DOCKER_CONFIG from the process environment.
      process.env.DOCKER_CONFIG = dockerDir;
      const report = await buildOnFarm(
        {
          image: `${secure.host}/app:latest`,
          path: app,
          buildpacks: [probeBp],
          runImage: `${secure.host}/run:v1`,
          insecureRegistries: [secure.host],
          publish: true,
          platforms: ['linux/amd64,linux/386'],
        },
        {
          nodes: [node(0, { platforms: ['linux/386'] }), node(1, { platforms: ['linux/amd64'] })],
          env: { ...process.env, DOCKER_CONFIG: dockerDir },
          onEvent: (e) => events.push(e),
        },
      );
      expect(report.targets.map((t) => t.farm?.node)).toEqual(['node1', 'node2']);
      // Buildpacks printed their whole environment: no credential in it.
      const envLines = events.filter((e) => e.type === 'output' && e.line.startsWith('probe-env: '));
      expect(envLines.length).toBeGreaterThan(10);
      for (const e of envLines) {
        const line = (e as { line: string }).line;
        expect(line).not.toContain('S3cret-farm-pw');
        expect(line).not.toContain(basic);
        expect(line).not.toMatch(/CNB_REGISTRY_AUTH|DOCKER_CONFIG/);
      }
      // Nothing on the nodes' disks holds the password, in clear or base64.
      for (const n of ssh.nodes.slice(0, 2)) {
        const grep = await execa('grep', ['-rlF', '-e', 'S3cret-farm-pw', '-e', basic, n.dataDir], {
          reject: false,
        });
        expect(grep.exitCode, grep.stdout).toBe(1);
        expect(grep.stdout).toBe('');
      }
    } finally {
      delete process.env.DOCKER_CONFIG;
      await secure.stop();
    }
  }, 300_000);
});
