import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildEvent } from '../../src/api/events.js';
import { explainCredentialError } from '../../src/farm/credentials.js';
import { packageBuildpack } from '../../src/builder/package.js';
import { buildOnFarm } from '../../src/farm/build.js';
import type { FarmNodeConfig } from '../../src/farm/config.js';
import { type JobCredential, type ToNode, createFrameDecoder, parseToNode } from '../../src/farm/protocol.js';
import { publishIndex } from '../../src/image/publish-index.js';
import { createRegistryStore } from '../../src/image/registry-store.js';
import type { Platform } from '../../src/oci/platform.js';
import { parseReference } from '../../src/oci/reference.js';
import { checkPushAccess } from '../../src/registry/access.js';
import { RegistryClient } from '../../src/registry/client.js';
import { isPackfarmError } from '../../src/util/errors.js';
import { useEnv } from '../helpers/cli.js';
import { compileSrcForChildProcesses } from '../helpers/compiled-src.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { createRunImage } from '../helpers/run-image.js';
import { type SshFarm, startSshNodes } from '../helpers/ssh-nodes.js';

/**
 * What the farm hands its nodes, seen on the wire: real SSH nodes (test/helpers/ssh-nodes.ts) whose node
 * command also copies everything the coordinator sends into a file (`tee`), a real registry with token auth
 * (docker-registry `auth.token` + our loopback token issuer signing JWTs with a test key), and the user's
 * password in a docker config on the coordinator only.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const probeBp = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'farm', 'farm_probe', '1.0.0');
const AMD64: Platform = { os: 'linux', architecture: 'amd64' };
const I386: Platform = { os: 'linux', architecture: '386' };
const USER = { name: 'farmer', password: 'S3cret-token-pw' };
const BASIC = Buffer.from(`${USER.name}:${USER.password}`).toString('base64');

let root: string;
let registry: TestRegistry;
let ssh: SshFarm;
let compiled: { dir: string; cleanup: () => Promise<void> };
let entry: string;
let dockerDir: string;
let restoreEnv: (() => void) | undefined;
let restoreDocker: (() => void) | undefined;

/** Node i, its serve command recording the coordinator's bytes into `wire` (appended, one file per node). */
function tappedNode(i: number, wire: string, extra: Partial<FarmNodeConfig> = {}): FarmNodeConfig {
  const n = ssh.nodes[i]!;
  return {
    ...n.config,
    command: `tee -a ${wire} | env PACKFARM_HOME=${n.dataDir} ${process.execPath} ${entry}`,
    ...extra,
  };
}

/** Every control message the coordinator sent, decoded from a tapped node's wire file. */
async function messagesOn(wire: string): Promise<ToNode[]> {
  const bytes = await readFile(wire);
  const decoder = createFrameDecoder('wire');
  const out: ToNode[] = [];
  // The file holds several connections back to back, each a whole frame stream.
  for (const f of decoder.push(bytes)) if (f.kind === 'json') out.push(parseToNode(f.value, 'wire'));
  decoder.end();
  return out;
}

async function makeApp(name: string, files: Record<string, string>): Promise<string> {
  const dir = join(root, 'apps', name);
  await mkdir(dir, { recursive: true });
  for (const [rel, text] of Object.entries(files)) await writeFile(join(dir, rel), text);
  return dir;
}

function store(repo: string) {
  return createRegistryStore(parseReference(`${registry.host}/${repo}`), {
    insecureRegistries: [registry.host],
    credentials: { username: USER.name, password: USER.password },
  });
}

async function farmBuild(
  image: string,
  app: string,
  nodes: FarmNodeConfig[],
  extra: { platforms?: string[]; tags?: string[] } = {},
) {
  const events: BuildEvent[] = [];
  const report = await buildOnFarm(
    {
      image,
      path: app,
      buildpacks: [probeBp],
      runImage: `${registry.host}/run:v1`,
      insecureRegistries: [registry.host],
      publish: true,
      platforms: extra.platforms ?? ['linux/amd64'],
      ...(extra.tags ? { tags: extra.tags } : {}),
    },
    {
      nodes,
      env: { ...process.env, DOCKER_CONFIG: dockerDir },
      onEvent: (e) => events.push(e),
    },
  );
  return { report, events };
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-farmcred-'));
  restoreEnv = useEnv({ PACKFARM_HOME: join(root, 'coordinator'), XDG_CONFIG_HOME: join(root, 'config') });
  compiled = await compileSrcForChildProcesses();
  entry = join(compiled.dir, 'packfarm.mjs');
  await writeFile(
    entry,
    "import { main } from './cli/main.js';\nprocess.exitCode = await main(process.argv.slice(2));\n",
  );
  ssh = await startSshNodes({ dir: join(root, 'ssh'), count: 2, entry, firstAddress: 12 });
  registry = await startRegistry({ auth: 'token', users: [{ ...USER }] });
  const run = store('run');
  const images = [];
  for (const p of [AMD64, I386])
    images.push(await createRunImage({ store: run, tag: `v1-${p.architecture}`, platform: p }));
  await publishIndex({ store: run, images: images.map((i) => i.digest), tags: ['v1'] });
  dockerDir = join(root, 'docker-config');
  await mkdir(dockerDir, { recursive: true });
  await writeFile(
    join(dockerDir, 'config.json'),
    JSON.stringify({
      auths: {
        [registry.host]: { auth: BASIC },
        // A registry no job touches: its password must stay here too.
        'unrelated.example:5000': { auth: Buffer.from('other:Unrelated-pw').toString('base64') },
      },
    }),
  );
  // The coordinator's planning reads the process environment's docker config.
  restoreDocker = useEnv({ DOCKER_CONFIG: dockerDir });
}, 180_000);

afterAll(async () => {
  restoreDocker?.();
  restoreEnv?.();
  await ssh?.stop();
  await registry?.stop();
  await compiled?.cleanup();
  await rm(root, { recursive: true, force: true });
});

describe('registry credentials scoped per repository', () => {
  it('a token registry: the node gets a token for exactly its repositories, never the password', async () => {
    const wire = join(root, 'wire-scoped.bin');
    const app = await makeApp('scoped', { 'app.txt': 'scoped\n' });
    const issued = registry.tokenIssuer!.requests.length;
    const { report, events } = await farmBuild(`${registry.host}/scoped:latest`, app, [tappedNode(0, wire)]);
    expect(report.targets.map((t) => t.farm?.node)).toEqual(['node1']);
    expect((await store('scoped').resolve('latest'))?.digest).toBe(report.digest);

    // The password never crossed the wire, in clear or base64; the credential is a token with its expiry.
    const bytes = await readFile(wire);
    expect(bytes.includes(USER.password)).toBe(false);
    expect(bytes.includes(BASIC)).toBe(false);
    expect(bytes.includes('Unrelated-pw')).toBe(false);
    const runs = (await messagesOn(wire)).filter(
      (m): m is Extract<ToNode, { type: 'run-target' }> => m.type === 'run-target',
    );
    expect(runs).toHaveLength(1);
    const creds: JobCredential[] = runs[0]!.credentials;
    expect(creds).toHaveLength(1);
    const cred = creds[0]!;
    expect(cred.registry).toBe(registry.host);
    expect(cred.password).toBeUndefined();
    expect(cred.username).toBeUndefined();
    expect(cred.identityToken).toBeUndefined();
    expect(cred.scopes).toEqual(['repository:run:pull', 'repository:scoped:pull,push']);
    expect(cred.expiresAt).toBeGreaterThan(Date.now());
    // The token service was asked for exactly those scopes, by the user, on the coordinator.
    const asked = registry.tokenIssuer!.requests.slice(issued).filter((r) => r.scopes.length === 2);
    expect(asked.map((r) => [r.user, [...r.scopes].sort()])).toContainEqual([
      USER.name,
      ['repository:run:pull', 'repository:scoped:pull,push'],
    ]);

    // What that token lets a node do: push to its output, and nothing to another repository.
    const client = new RegistryClient({
      registry: registry.host,
      insecureRegistries: [registry.host],
      credentials: { registryToken: cred.registryToken! },
    });
    try {
      await checkPushAccess(client, 'scoped');
      let refused: unknown;
      try {
        await checkPushAccess(client, 'elsewhere');
      } catch (e) {
        refused = e;
      }
      expect(isPackfarmError(refused)).toBe(true);
      expect(['REGISTRY_DENIED', 'REGISTRY_UNAUTHORIZED']).toContain((refused as { code: string }).code);
      // On the node such a refusal names the token and its scopes; after its expiry it says so.
      const named = explainCredentialError(refused, creds) as Error;
      expect(named.message).toContain(
        `${registry.host} refused the registry token the coordinator scoped for this job (repository:run:pull repository:scoped:pull,push`,
      );
      const late = explainCredentialError(refused, creds, cred.expiresAt! + 5_000);
      expect(isPackfarmError(late, 'FARM_TOKEN_EXPIRED')).toBe(true);
      expect((late as Error).message).toMatch(/expired at .*, 5 s ago/);
    } finally {
      await client.close();
    }

    // Neither the token nor the password on the node's disk, nor in the buildpacks' environment.
    const grep = await execa(
      'grep',
      ['-rlF', '-e', USER.password, '-e', BASIC, '-e', cred.registryToken!, ssh.nodes[0]!.dataDir],
      { reject: false },
    );
    expect(grep.exitCode, grep.stdout).toBe(1);
    const envLines = events.filter((e) => e.type === 'output' && e.line.startsWith('probe-env: '));
    expect(envLines.length).toBeGreaterThan(10);
    for (const e of envLines) expect((e as { line: string }).line).not.toContain(cred.registryToken!);
  }, 300_000);
});

describe('a registry buildpackage named in project.toml', () => {
  it('the job’s token may pull it (and nothing more); the node builds with it', async () => {
    const wire = join(root, 'wire-project-bp.bin');
    const config = join(root, 'probe-package.toml');
    await writeFile(config, `[buildpack]\nuri = "${probeBp}"\n`);
    const scratchDir = join(root, 'pkg-scratch');
    await mkdir(scratchDir, { recursive: true });
    await packageBuildpack({
      name: `${registry.host}/buildpacks/probe:1`,
      config,
      format: 'image',
      targets: ['linux/amd64'],
      insecureRegistries: [registry.host],
      registry: { credentials: { username: USER.name, password: USER.password } },
      scratchDir,
    });
    const app = await makeApp('project-bp', {
      'app.txt': 'project-bp\n',
      'project.toml': `[_]\nschema-version = "0.2"\n[[io.buildpacks.group]]\nuri = "docker://${registry.host}/buildpacks/probe:1"\n`,
    });
    const events: BuildEvent[] = [];
    const report = await buildOnFarm(
      {
        image: `${registry.host}/project-bp:latest`,
        path: app,
        runImage: `${registry.host}/run:v1`,
        insecureRegistries: [registry.host],
        publish: true,
        platforms: ['linux/amd64'],
      },
      {
        nodes: [tappedNode(1, wire)],
        env: { ...process.env, DOCKER_CONFIG: dockerDir },
        onEvent: (e) => events.push(e),
      },
    );
    expect((await store('project-bp').resolve('latest'))?.digest).toBe(report.digest);
    expect(
      events.some((e) => e.type === 'output' && e.line === 'probe: building for linux/amd64 app=project-bp'),
    ).toBe(true);
    const runs = (await messagesOn(wire)).filter(
      (m): m is Extract<ToNode, { type: 'run-target' }> => m.type === 'run-target',
    );
    expect(runs.map((r) => r.credentials.map((c) => c.scopes))).toEqual([
      [['repository:buildpacks/probe:pull', 'repository:project-bp:pull,push', 'repository:run:pull']],
    ]);
  }, 300_000);
});

describe('--tag in other repositories on a farm', () => {
  it('the coordinator mounts each per-arch image into the other repository; the index is tagged in both', async () => {
    const wire = join(root, 'wire-tags.bin');
    const app = await makeApp('tags', { 'app.txt': 'tags\n' });
    registry.resetCounters();
    const { report } = await farmBuild(
      `${registry.host}/multi:latest`,
      app,
      [
        tappedNode(0, wire, { platforms: ['linux/386'] }),
        tappedNode(1, wire, { platforms: ['linux/amd64'] }),
      ],
      {
        platforms: ['linux/amd64,linux/386'],
        tags: [`${registry.host}/extra:v1`, `${registry.host}/multi:also`],
      },
    );
    expect(report.index).toBe(true);
    expect(report.targets.map((t) => t.farm?.node)).toEqual(['node1', 'node2']);
    expect([...report.tags].sort()).toEqual(
      [`${registry.host}/extra:v1`, `${registry.host}/multi:also`, `${registry.host}/multi:latest`].sort(),
    );
    // The same index under every tag, its children (and all their blobs) in the other repository too.
    for (const [repo, tag] of [
      ['multi', 'latest'],
      ['multi', 'also'],
      ['extra', 'v1'],
    ] as const)
      expect((await store(repo).resolve(tag))?.digest, `${repo}:${tag}`).toBe(report.digest);
    const inspected = await execa('skopeo', [
      'inspect',
      '--raw',
      '--tls-verify=false',
      '--creds',
      `${USER.name}:${USER.password}`,
      `docker://${registry.host}/extra:v1`,
    ]);
    const index = JSON.parse(inspected.stdout) as { manifests: Array<{ digest: string }> };
    expect(index.manifests.map((m) => m.digest)).toEqual(report.targets.map((t) => t.digest));
    for (const t of report.targets) {
      await execa('skopeo', [
        'inspect',
        '--tls-verify=false',
        '--creds',
        `${USER.name}:${USER.password}`,
        `docker://${registry.host}/extra@${t.digest}`,
      ]);
    }
    // Into `extra` every blob was mounted from `multi`, none uploaded; nodes never pushed there.
    const extra = registry.requests.filter((r) => r.repository === 'extra');
    expect(
      extra.filter((r) => r.kind === 'upload' && r.method === 'POST' && r.status === 201).length,
    ).toBeGreaterThan(0);
    expect(extra.filter((r) => r.kind === 'upload' && r.method === 'PUT')).toEqual([]);
    // The nodes' tokens cover the first output and the run image only.
    const runs = (await messagesOn(wire)).filter(
      (m): m is Extract<ToNode, { type: 'run-target' }> => m.type === 'run-target',
    );
    expect(runs).toHaveLength(2);
    for (const r of runs)
      expect(r.credentials.map((c) => c.scopes)).toEqual([
        ['repository:multi:pull,push', 'repository:run:pull'],
      ]);
  }, 300_000);

  it('one target: the image itself is tagged in the other repository', async () => {
    const app = await makeApp('tags-one', { 'app.txt': 'one\n' });
    const { report } = await farmBuild(`${registry.host}/single:latest`, app, [ssh.nodes[0]!.config], {
      tags: [`${registry.host}/single-extra:v2`],
    });
    expect(report.index).toBe(false);
    expect(report.targets[0]?.tags.sort()).toEqual(
      [`${registry.host}/single-extra:v2`, `${registry.host}/single:latest`].sort(),
    );
    expect((await store('single-extra').resolve('v2'))?.digest).toBe(report.digest);
    expect((await store('single').resolve('latest'))?.digest).toBe(report.digest);
  }, 300_000);
});

describe('the app travels as pieces', () => {
  it('a rebuild after one file changed sends about that file; images equal a local build', async () => {
    const files: Record<string, string> = { 'app.txt': 'pieces\n' };
    for (let i = 0; i < 60; i++)
      files[`file${i}.js`] =
        `// ${i}\n${Array.from({ length: 200 }, (_, j) => `const v${j} = ${i * j};`).join('\n')}\n`;
    const app = await makeApp('pieces', files);
    await writeFile(join(app, 'blob.bin'), randomBytes(1_000_000));
    const nodes = [ssh.nodes[1]!.config];
    const first = await farmBuild(`${registry.host}/pieces:latest`, app, nodes);
    const firstSent = first.report.targets[0]!.farm!.bytesSent;
    expect(firstSent).toBeGreaterThan(1_000_000);

    const changed = join(app, 'file7.js');
    await writeFile(changed, (await readFile(changed, 'utf8')).replace('const v1 =', 'const w1 ='));
    const changedBytes = (await readFile(changed)).length;
    const second = await farmBuild(`${registry.host}/pieces:latest`, app, nodes);
    const t = second.report.targets[0]!;
    expect(second.report.digest).not.toBe(first.report.digest);
    // The changed file's piece, the group holding it and the app's index: a few KB, not the app again.
    expect(t.farm?.blobsSent).toBe(3);
    expect(t.farm!.bytesSent).toBeLessThan(changedBytes + 16_000);
    expect(t.farm!.bytesSent * 50).toBeLessThan(firstSent);

    // The node rebuilt the exact app: the image is the one a local build makes of the same app.
    const local = await farmBuild(`${registry.host}/pieces-local:latest`, app, [
      { name: 'local', uri: 'local' },
    ]);
    expect(local.report.digest).toBe(second.report.digest);
  }, 300_000);
});

describe('scoped tokens renewed while a job runs (protocol 4)', () => {
  let short: TestRegistry;
  beforeAll(async () => {
    // Tokens that live 4 s, refused by the registry right after (the issuer cancels distribution's leeway).
    short = await startRegistry({
      auth: 'token',
      users: [{ ...USER }],
      token: { expiresIn: 4, registryLeeway: 60 },
    });
    const run = createRegistryStore(parseReference(`${short.host}/run`), {
      insecureRegistries: [short.host],
      credentials: { username: USER.name, password: USER.password },
    });
    const image = await createRunImage({ store: run, tag: 'v1-amd64', platform: AMD64 });
    await publishIndex({ store: run, images: [image.digest], tags: ['v1'] });
    await writeFile(
      join(dockerDir, 'config.json'),
      JSON.stringify({ auths: { [registry.host]: { auth: BASIC }, [short.host]: { auth: BASIC } } }),
    );
  }, 120_000);
  afterAll(async () => {
    await short?.stop();
  });

  it('a build outliving its token pushes with a renewed one of the same scopes', async () => {
    const wire = join(root, 'wire-renew.bin');
    const app = await makeApp('renew', { 'app.txt': 'renew\n' });
    const events: BuildEvent[] = [];
    const report = await buildOnFarm(
      {
        image: `${short.host}/slow:latest`,
        path: app,
        buildpacks: [probeBp],
        runImage: `${short.host}/run:v1`,
        insecureRegistries: [short.host],
        publish: true,
        platforms: ['linux/amd64'],
        // The buildpack takes 10 s: the job's first token (4 s) is long refused when the image is pushed.
        env: ['FARM_SLEEP=10'],
      },
      {
        nodes: [tappedNode(0, wire)],
        env: { ...process.env, DOCKER_CONFIG: dockerDir },
        onEvent: (e) => events.push(e),
      },
    );
    const pushed = createRegistryStore(parseReference(`${short.host}/slow`), {
      insecureRegistries: [short.host],
      credentials: { username: USER.name, password: USER.password },
    });
    expect((await pushed.resolve('latest'))?.digest).toBe(report.digest);

    // On the wire: the job's token, then renewed ones — same registry, same scopes, never the password.
    const bytes = await readFile(wire);
    expect(bytes.includes(USER.password)).toBe(false);
    expect(bytes.includes(BASIC)).toBe(false);
    const sent = await messagesOn(wire);
    const run = sent.find((m): m is Extract<ToNode, { type: 'run-target' }> => m.type === 'run-target');
    const first = run?.credentials[0];
    expect(first?.scopes).toEqual(['repository:run:pull', 'repository:slow:pull,push']);
    const renewed = sent.filter((m): m is Extract<ToNode, { type: 'token' }> => m.type === 'token');
    // 10 s of buildpack alone, renewed half-way through each 4 s token.
    expect(renewed.length).toBeGreaterThanOrEqual(3);
    for (const t of renewed) {
      expect(t.error).toBeUndefined();
      expect(t.credential).toMatchObject({ registry: short.host, scopes: first?.scopes });
      expect(t.credential?.password).toBeUndefined();
      expect(t.credential?.registryToken).not.toBe(first?.registryToken);
    }
    // The token service issued each by the user, for exactly those scopes.
    const asked = short.tokenIssuer!.requests.filter(
      (r) => r.user === USER.name && [...r.scopes].sort().join(' ') === first?.scopes?.join(' '),
    );
    expect(asked.length).toBeGreaterThanOrEqual(renewed.length + 1);
    const debug = events.filter((e) => e.type === 'debug' && e.message.includes('registry token renewed'));
    expect(debug.length).toBe(renewed.length);

    // The job's first token is refused by now: the push at the end went through with a renewed one.
    const client = new RegistryClient({
      registry: short.host,
      insecureRegistries: [short.host],
      credentials: { registryToken: first!.registryToken! },
    });
    try {
      let refused: unknown;
      try {
        await checkPushAccess(client, 'slow');
      } catch (e) {
        refused = e;
      }
      expect((refused as { code?: string })?.code).toBe('REGISTRY_UNAUTHORIZED');
    } finally {
      await client.close();
    }
  }, 300_000);
});
