import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PassThrough } from 'node:stream';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { sha256Digest } from '../oci/digest.js';
import { type FromNode, PROTOCOL_VERSION, type TargetJob, openChannel, parseFromNode } from './protocol.js';
import { serveNode } from './serve.js';

/**
 * The node server over in-memory streams, with real job processes: a shell script stands in for
 * `packfarm node run-job` (it reads the job from stdin and answers like one), so hello, have/want, the blob
 * cache, results, errors and cancel are checked without ssh.
 */
let dir: string;
beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'pf-serve-'));
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

const app = Buffer.from('app tar bytes');
const appDigest = sha256Digest(app);
const spec = (): TargetJob => ({
  platform: 'linux/amd64',
  app: { digest: appDigest, size: app.length },
  buildpacks: [],
  output: { kind: 'registry', image: 'registry.example/app:latest' },
  untagged: true,
  env: [],
  insecureRegistries: [],
  clearCache: false,
  platformApi: '0.14',
});

async function start(worker: string) {
  const toNode = new PassThrough();
  const fromNode = new PassThrough();
  const got: FromNode[] = [];
  const blobs: string[] = [];
  const served = serveNode({
    input: toNode,
    output: fromNode,
    dataDir: join(dir, 'data'),
    version: '9.9.9',
    maxJobs: 3,
    platforms: async () => ({ native: ['linux/amd64'], emulated: ['linux/arm64'] }),
    workerCommand: ['/bin/sh', worker],
  });
  const ch = openChannel({
    input: fromNode,
    output: toNode,
    source: 'node',
    onFrame: (f) => {
      if (f.kind === 'json') got.push(parseFromNode(f.value, 'node'));
      else blobs.push(f.digest);
    },
    onClose: () => {},
  });
  const waitFor = async <T extends FromNode['type']>(
    type: T,
    pred: (m: Extract<FromNode, { type: T }>) => boolean = () => true,
  ) => {
    for (let i = 0; i < 300; i++) {
      const m = got.find((x) => x.type === type && pred(x as Extract<FromNode, { type: T }>));
      if (m) return m as Extract<FromNode, { type: T }>;
      await new Promise((r) => setTimeout(r, 20));
    }
    throw new Error(`no ${type} message; got ${JSON.stringify(got)}`);
  };
  return { ch, got, served, waitFor };
}

describe('node serve', () => {
  it('says hello, takes a blob once (have/want), runs a job and relays its events and result', async () => {
    const worker = join(dir, 'worker.sh');
    await writeFile(
      worker,
      [
        'IFS= read -r input',
        // The job sees its input (credentials included) on stdin only: record whether it got them.
        'case "$input" in *s3cret*) echo got-credentials > "$(dirname "$0")/seen";; esac',
        `echo '{"type":"event","phase":"build","event":{"type":"output","target":"linux/amd64","phase":"build","line":"hi"}}'`,
        `echo '{"type":"result","digest":"${sha256Digest('m')}","size":1,"mediaType":"application/vnd.oci.image.manifest.v1+json","report":{"platform":"linux/amd64"}}'`,
      ].join('\n'),
    );
    const { ch, waitFor, served } = await start(worker);
    await ch.send({ type: 'hello', protocol: PROTOCOL_VERSION, packfarm: '9.9.9' });
    const hello = await waitFor('hello');
    expect(hello.node).toMatchObject({
      native: ['linux/amd64'],
      emulated: ['linux/arm64'],
      maxJobs: 3,
      runningJobs: 0,
    });

    await ch.send({ type: 'have', id: 'h1', digests: [appDigest] });
    expect((await waitFor('want', (m) => m.id === 'h1')).digests).toEqual([appDigest]);
    await ch.sendBlob(appDigest, PassThrough.from([app]));
    await ch.send({
      type: 'run-target',
      job: 'j1',
      node: 'n1',
      target: 'linux/amd64',
      spec: spec(),
      credentials: [{ registry: 'registry.example', username: 'u', password: 's3cret' }],
    });
    const ev = await waitFor('event');
    expect(ev).toMatchObject({
      job: 'j1',
      node: 'n1',
      target: 'linux/amd64',
      phase: 'build',
      event: { line: 'hi' },
    });
    expect((await waitFor('result')).result.report).toEqual({ platform: 'linux/amd64' });
    expect(await readFile(join(dir, 'data', 'farm', 'blobs', 'sha256', appDigest.slice(7)))).toEqual(app);
    expect(await readFile(join(dir, 'seen'), 'utf8')).toBe('got-credentials\n');
    // The same blob again: nothing wanted. The job dir is gone.
    await ch.send({ type: 'have', id: 'h2', digests: [appDigest] });
    expect((await waitFor('want', (m) => m.id === 'h2')).digests).toEqual([]);
    expect(await readdir(join(dir, 'data', 'farm', 'jobs'))).toEqual([]);
    ch.close();
    await served;
  });

  it('relays a job’s token request to the coordinator and the renewed token down the job’s stdin', async () => {
    const worker = join(dir, 'renew.sh');
    await writeFile(
      worker,
      [
        'IFS= read -r input',
        `echo '{"type":"token-request","id":"t1","registry":"registry.example"}'`,
        'IFS= read -r answer',
        'printf "%s\\n" "$answer" > "$(dirname "$0")/answer"',
        `echo '{"type":"result","digest":"${sha256Digest('m')}","size":1,"mediaType":"application/vnd.oci.image.manifest.v1+json","report":{}}'`,
      ].join('\n'),
    );
    const { ch, waitFor, served } = await start(worker);
    await ch.send({ type: 'hello', protocol: PROTOCOL_VERSION, packfarm: '9.9.9' });
    await waitFor('hello');
    await ch.send({ type: 'have', id: 'h', digests: [appDigest] });
    await waitFor('want');
    await ch.sendBlob(appDigest, PassThrough.from([app]));
    await ch.send({
      type: 'run-target',
      job: 'j',
      node: 'n',
      target: 'linux/amd64',
      spec: spec(),
      credentials: [],
    });
    expect(await waitFor('token-request')).toEqual({
      type: 'token-request',
      job: 'j',
      id: 't1',
      registry: 'registry.example',
    });
    const credential = {
      registry: 'registry.example',
      registryToken: 'fresh-token',
      expiresAt: 2_000_000_000_000,
      issuedAt: 1_999_999_700_000,
      scopes: ['repository:app:pull,push'],
    };
    await ch.send({ type: 'token', job: 'j', id: 't1', credential });
    await waitFor('result');
    expect(JSON.parse(await readFile(join(dir, 'answer'), 'utf8'))).toEqual({
      type: 'token',
      id: 't1',
      credential,
    });
    ch.close();
    await served;
  });

  it('refuses another protocol version, naming both packfarm versions', async () => {
    const { ch, waitFor, served } = await start(join(dir, 'none.sh'));
    await ch.send({ type: 'hello', protocol: 99, packfarm: '0.0.1' });
    const err = await waitFor('error');
    expect(err.error.code).toBe('PROTOCOL_VERSION');
    expect(err.error.message).toBe(
      `this node speaks packfarm node protocol ${PROTOCOL_VERSION} (packfarm 9.9.9); the coordinator speaks 99 (packfarm 0.0.1)`,
    );
    await served;
  });

  it('a job without its blob fails as a node fault', async () => {
    const { ch, waitFor, served } = await start(join(dir, 'none.sh'));
    await ch.send({ type: 'hello', protocol: PROTOCOL_VERSION, packfarm: '9.9.9' });
    await waitFor('hello');
    await ch.send({
      type: 'run-target',
      job: 'j',
      node: 'n',
      target: 'linux/amd64',
      spec: spec(),
      credentials: [],
    });
    const err = await waitFor('error');
    expect(err.error).toMatchObject({ code: 'BLOB_MISSING', nodeFault: true, phase: 'transfer' });
    ch.close();
    await served;
  });

  it('closing the channel kills the job’s whole process group and removes its job dir', async () => {
    const worker = join(dir, 'slow.sh');
    const pidFile = join(dir, 'child.pid');
    await writeFile(worker, `IFS= read -r input\nsleep 60 &\necho $! > ${pidFile}\nwait\n`);
    await chmod(worker, 0o755);
    const { ch, waitFor, served } = await start(worker);
    await ch.send({ type: 'hello', protocol: PROTOCOL_VERSION, packfarm: '9.9.9' });
    await waitFor('hello');
    await ch.send({ type: 'have', id: 'h', digests: [appDigest] });
    await waitFor('want');
    await ch.sendBlob(appDigest, PassThrough.from([app]));
    await ch.send({
      type: 'run-target',
      job: 'slow',
      node: 'n',
      target: 'linux/amd64',
      spec: spec(),
      credentials: [],
    });
    let pid = 0;
    for (let i = 0; i < 300 && !pid; i++) {
      pid = Number(await readFile(pidFile, 'utf8').catch(() => '0'));
      if (!pid) await new Promise((r) => setTimeout(r, 20));
    }
    expect(pid).toBeGreaterThan(0);
    expect((await readdir(join(dir, 'data', 'farm', 'jobs'))).length).toBe(1);
    ch.close();
    await served;
    let alive = true;
    for (let i = 0; i < 100 && alive; i++) {
      try {
        process.kill(pid, 0);
        await new Promise((r) => setTimeout(r, 20));
      } catch {
        alive = false;
      }
    }
    expect(alive).toBe(false);
    expect(await readdir(join(dir, 'data', 'farm', 'jobs'))).toEqual([]);
  });
});
