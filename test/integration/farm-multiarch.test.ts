import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildEvent } from '../../src/api/events.js';
import { buildOnFarm } from '../../src/farm/build.js';
import { type FarmNodeConfig, LOCAL_NODE } from '../../src/farm/config.js';
import { createRegistryStore } from '../../src/image/registry-store.js';
import type { Platform } from '../../src/oci/platform.js';
import { parseReference } from '../../src/oci/reference.js';
import { usePackfarmHome } from '../helpers/cli.js';
import { writeBuilderIndex } from '../helpers/builder-index.js';
import { compileSrcForChildProcesses } from '../helpers/compiled-src.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner } from '../helpers/run-image.js';
import { type SshFarm, startSshNodes } from '../helpers/ssh-nodes.js';

/**
 * Three targets on a farm of two SSH nodes and the local node, buildpacks in each target's build image (oci
 * executor, runc; arm64 and s390x through qemu binfmt_misc on these amd64 machines). `platforms`
 * restrictions force the foreign targets onto the SSH nodes; amd64 goes where it runs natively.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const probeBp = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'farm', 'farm_probe', '1.0.0');
const PLATFORMS: Platform[] = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
  { os: 'linux', architecture: 's390x' },
];
const MACHINE: Record<string, string> = { amd64: 'x86_64', arm64: 'aarch64', s390x: 's390x' };

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let ssh: SshFarm;
let compiled: { dir: string; cleanup: () => Promise<void> };
let builderRef: string;
let restoreHome: (() => void) | undefined;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-farm-multiarch-'));
  restoreHome = usePackfarmHome(join(root, 'coordinator'));
  compiled = await compileSrcForChildProcesses();
  const entry = join(compiled.dir, 'packfarm.mjs');
  await writeFile(
    entry,
    "import { main } from './cli/main.js';\nprocess.exitCode = await main(process.argv.slice(2));\n",
  );
  ssh = await startSshNodes({ dir: join(root, 'ssh'), count: 2, entry, firstAddress: 5 });
  registry = await startRegistry();
  podman = await createPodmanRunner();
  const store = (repo: string) =>
    createRegistryStore(parseReference(`${registry.host}/${repo}`), { insecureRegistries: [registry.host] });
  await writeBuilderIndex({
    builder: store('builder'),
    run: store('run'),
    runRef: `${registry.host}/run:1`,
    tag: '1',
    platforms: PLATFORMS,
    buildpack: { dir: probeBp, id: 'farm/probe', version: '1.0.0' },
    workDir: root,
  });
  builderRef = `${registry.host}/builder:1`;
}, 600_000);

afterAll(async () => {
  restoreHome?.();
  await ssh?.stop();
  await podman?.cleanup();
  await registry?.stop();
  await compiled?.cleanup();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('a three-target build on a farm (oci executor)', () => {
  it('places foreign targets on the nodes allowed them, amd64 natively; one index podman runs per arch', async () => {
    const app = join(root, 'app');
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'app.txt'), 'three\n');
    const nodes: FarmNodeConfig[] = [
      { name: LOCAL_NODE, uri: LOCAL_NODE, platforms: ['linux/amd64'] },
      { ...ssh.nodes[0]!.config, platforms: ['linux/arm64'] },
      { ...ssh.nodes[1]!.config, platforms: ['linux/s390x', 'linux/amd64'] },
    ];
    const events: BuildEvent[] = [];
    const image = `${registry.host}/app:latest`;
    const report = await buildOnFarm(
      {
        image,
        path: app,
        builder: builderRef,
        insecureRegistries: [registry.host],
        publish: true,
        platforms: ['linux/s390x,linux/arm64,linux/amd64'],
      },
      { nodes, onEvent: (e) => events.push(e) },
    );
    expect(report.index).toBe(true);
    // amd64 could go to local or node2 (both native): the tie goes to the first by name; the foreign targets
    // go to the only node allowed each, emulated there.
    expect(report.targets.map((t) => [t.platform, t.runs, t.executor, t.farm?.node])).toEqual([
      ['linux/amd64', 'native', 'oci', 'local'],
      ['linux/arm64', 'emulated', 'oci', 'node1'],
      ['linux/s390x', 'emulated', 'oci', 'node2'],
    ]);
    expect(
      events.filter((e) => e.type === 'placed').map((e) => e.type === 'placed' && [e.target, e.runs]),
    ).toEqual(
      expect.arrayContaining([
        ['linux/amd64', 'native'],
        ['linux/arm64', 'emulated'],
        ['linux/s390x', 'emulated'],
      ]),
    );
    const raw = await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${image}`]);
    const index = JSON.parse(raw.stdout) as {
      manifests: Array<{ digest: string; platform: { architecture: string } }>;
    };
    expect(index.manifests.map((m) => m.platform.architecture)).toEqual(['amd64', 'arm64', 's390x']);
    expect(index.manifests.map((m) => m.digest)).toEqual(report.targets.map((t) => t.digest));
    for (const p of PLATFORMS) {
      const run = await podman.run(image, { flags: ['--arch', p.architecture] });
      expect(run.stdout).toContain(
        `target=linux/${p.architecture} app=three uname=${MACHINE[p.architecture]}`,
      );
    }
  }, 900_000);

  it('refuses --volume when the farm has remote nodes: a node cannot mount a path of this machine', async () => {
    const app = join(root, 'app-vol');
    await mkdir(app, { recursive: true });
    await writeFile(join(app, 'app.txt'), 'vol\n');
    const nodes: FarmNodeConfig[] = [
      { name: LOCAL_NODE, uri: LOCAL_NODE, platforms: ['linux/amd64'] },
      { ...ssh.nodes[0]!.config, platforms: ['linux/arm64'] },
    ];
    const built = buildOnFarm(
      {
        image: `${registry.host}/app-vol:latest`,
        path: app,
        builder: builderRef,
        insecureRegistries: [registry.host],
        publish: true,
        platforms: ['linux/arm64'],
        volumes: [{ host: app, target: '/data', readOnly: true }],
      },
      { nodes },
    );
    await expect(built).rejects.toMatchObject({ code: 'EXECUTOR_UNSUPPORTED' });
    await expect(built).rejects.toThrow(
      `--volume ${app}:/data: farm nodes cannot mount a path of this machine`,
    );
  }, 600_000);
});
