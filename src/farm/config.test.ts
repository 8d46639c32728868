import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  addNode,
  defaultNodeName,
  getFarm,
  nodeFromInput,
  parseNodeUri,
  readFarms,
  removeNode,
  updateFarms,
} from './config.js';
import { importPodmanFarm, readPodmanSetup } from './podman.js';

const fixtures = join(import.meta.dirname, '..', '..', 'test', 'fixtures', 'podman');
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-farmcfg-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('node URIs', () => {
  it('parses ssh://[user@]host[:port] and local, and refuses anything else', () => {
    expect(parseNodeUri('ssh://ci@127.0.0.2:2222')).toEqual({ user: 'ci', host: '127.0.0.2', port: 2222 });
    expect(parseNodeUri('ssh://[::1]')).toEqual({ host: '::1' });
    expect(parseNodeUri('local')).toBe('local');
    expect(() => parseNodeUri('tcp://host:1', 'node x')).toThrow(/node x: "tcp:\/\/host:1" is not a node/);
    expect(() => parseNodeUri('host', 'node x')).toThrow(/expected ssh:\/\/\[user@\]host\[:port\]/);
    expect(defaultNodeName('ssh://ci@127.0.0.2:2222')).toBe('ci@127.0.0.2:2222');
  });
});

describe('farms file', () => {
  it('creates, adds, removes through temp+rename and reads back what it wrote', async () => {
    const path = join(dir, 'packfarm', 'farms.toml');
    await updateFarms(path, (f) => {
      f.farms.ci = { nodes: [] };
      addNode(f.farms.ci, nodeFromInput({ uri: 'local' }), 'ci');
      addNode(
        f.farms.ci,
        nodeFromInput(
          { uri: 'ssh://b@127.0.0.3:22', identity: 'k/id', platforms: ['linux/aarch64'], maxJobs: 2 },
          '/home/u',
        ),
        'ci',
      );
    });
    const file = await readFarms(path);
    expect(getFarm(file, 'ci', path).nodes).toEqual([
      { name: 'local', uri: 'local' },
      {
        name: 'b@127.0.0.3:22',
        uri: 'ssh://b@127.0.0.3:22',
        identity: '/home/u/k/id',
        platforms: ['linux/arm64'],
        max_jobs: 2,
      },
    ]);
    expect(await readdir(join(dir, 'packfarm'))).toEqual(['farms.toml']);
    expect(() => addNode(file.farms.ci!, nodeFromInput({ uri: 'local' }), 'ci')).toThrow(
      /already has a node named "local"/,
    );
    await updateFarms(path, (f) => removeNode(f.farms.ci!, 'local', 'ci'));
    expect((await readFarms(path)).farms.ci?.nodes.map((n) => n.name)).toEqual(['b@127.0.0.3:22']);
    expect(() => getFarm(file, 'nope', path)).toThrow(/no farm named "nope"/);
  });

  it('names the file and the field of a bad entry', async () => {
    const path = join(dir, 'farms.toml');
    await writeFile(path, '[farms.x]\n[[farms.x.nodes]]\nname = "n"\nuri = "ftp://h"\n');
    await expect(readFarms(path)).rejects.toThrow(`${path} farms.x.nodes[0] uri: "ftp://h" is not a node`);
    await writeFile(path, '[farms.x]\n[[farms.x.nodes]]\nname = "n"\nuri = "local"\nmax_jobs = 0\n');
    await expect(readFarms(path)).rejects.toThrow(/farms\.x\.nodes\[0\]\.max_jobs/);
    await writeFile(
      path,
      '[farms.x]\n[[farms.x.nodes]]\nname = "n"\nuri = "local"\nplatforms = ["linux/arm64/v8/extra"]\n',
    );
    await expect(readFarms(path)).rejects.toThrow(/platforms: "linux\/arm64\/v8\/extra" is not a platform/);
  });
});

describe('import-podman', () => {
  it('reads containers.conf farms and service destinations (podman 4)', async () => {
    const setup = await readPodmanSetup({
      CONTAINERS_CONF: join(fixtures, 'containers.conf'),
      XDG_CONFIG_HOME: dir,
    });
    const imported = importPodmanFarm(setup);
    expect(imported.podmanFarm).toBe('mixed');
    expect(imported.nodes).toEqual([
      { name: 'amd-box', uri: 'ssh://root@amd.example' },
      { name: 'arm-box', uri: 'ssh://builder@10.0.0.7:2222', identity: '/home/me/.ssh/id_arm' },
    ]);
    expect(imported.skipped).toEqual([
      { name: 'local-sock', reason: 'unix:///run/podman/podman.sock is not an ssh:// connection' },
    ]);
    expect(importPodmanFarm(setup, 'arm-only').nodes.map((n) => n.name)).toEqual(['arm-box']);
    let err: { message: string; hint?: string } | undefined;
    try {
      importPodmanFarm(setup, 'gone');
    } catch (e) {
      err = e as typeof err;
    }
    expect(err?.message).toMatch(/podman has no farm named "gone" \(read: .*containers.conf\)/);
    expect(err?.hint).toBe('podman farms: mixed, arm-only');
  });

  it('lets podman-connections.json (podman 5) win over containers.conf', async () => {
    const setup = await readPodmanSetup({
      CONTAINERS_CONF: join(fixtures, 'containers.conf'),
      PODMAN_CONNECTIONS_CONF: join(fixtures, 'podman-connections.json'),
    });
    const imported = importPodmanFarm(setup);
    expect(imported.podmanFarm).toBe('edge');
    expect(imported.nodes).toEqual([
      { name: 'riscv', uri: 'ssh://me@[fd00::5]:22', identity: '/home/me/.ssh/id_rv' },
      { name: 'arm-box', uri: 'ssh://builder@10.0.0.8', identity: '/home/me/.ssh/id_arm2' },
    ]);
  });

  it('takes every connection when podman has no farm, and says when there is nothing', async () => {
    const conf = join(dir, 'containers.conf');
    await writeFile(
      conf,
      '[engine.service_destinations.b]\nuri = "ssh://b"\n[engine.service_destinations.a]\nuri = "ssh://a:2"\n',
    );
    const all = importPodmanFarm(await readPodmanSetup({ CONTAINERS_CONF: conf, XDG_CONFIG_HOME: dir }));
    expect(all.podmanFarm).toBeUndefined();
    expect(all.nodes.map((n) => n.uri)).toEqual(['ssh://a:2', 'ssh://b']);
    await writeFile(conf, '');
    expect(() => importPodmanFarm({ connections: new Map(), farms: new Map(), sources: [conf] })).toThrow(
      /no podman system connections to import/,
    );
    expect(String(await readFile(conf))).toBe('');
  });
});
