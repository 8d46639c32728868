import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { Digest } from '../oci/digest.js';
import { isErrorCode } from '../util/error-codes.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import type { BlobReceiver } from './blob-cache.js';
import { type FarmNodeConfig, parseNodeUri } from './config.js';
import {
  type Channel,
  type ErrorBody,
  type FromNode,
  type JobCredential,
  type JobResult,
  type NodeInfo,
  PROTOCOL_VERSION,
  type TargetJob,
  type ToNode,
  encodeMessage,
  openChannel,
  parseFromNode,
} from './protocol.js';
import { sshArgv, sshFailure } from './ssh.js';

/**
 * The coordinator's end of one node: one process (ssh, or a local `packfarm node serve`) for the whole
 * build, carrying every job placed on that node.
 */
export interface ConnectOptions {
  version: string;
  /** argv that runs this packfarm locally, e.g. [process.execPath, bin/packfarm.js] (for a `local` node). */
  localCommand: () => string[];
  env?: NodeJS.ProcessEnv;
  /** Abandon a node that has not said hello by then (ssh's own timeouts usually answer first). */
  helloTimeoutMs?: number;
  log?: (line: string) => void;
}

export interface BlobSource {
  digest: Digest;
  size: number;
  open: () => Readable;
}

export type NodeEvent = Extract<FromNode, { type: 'event' }>;
type Hello = Extract<FromNode, { type: 'hello' }>;

export interface RunTargetRequest {
  job: string;
  target: string;
  spec: TargetJob;
  credentials: JobCredential[];
  onEvent?: (e: NodeEvent) => void;
  /**
   * The job asks for a fresh token for a registry (protocol 4): the coordinator issues one for the same scopes.
   * Without it, requests are answered with an error (the job keeps its token until it expires).
   */
  renewToken?: (registry: string) => Promise<JobCredential>;
  /** oci output: which of the image's blobs the coordinator already has, and where new ones go. */
  hasBlob?: (d: Digest) => Promise<boolean>;
  receiveBlob?: (d: Digest) => BlobReceiver;
  /** --cache-dir: the same for the layers of the job's new cache (`have` kind `cache`). */
  hasCacheBlob?: (d: Digest) => Promise<boolean>;
  receiveCacheBlob?: (d: Digest) => BlobReceiver;
}

export type RunTargetOutcome =
  | { ok: true; result: JobResult; bytesReceived: number; blobsReceived: Digest[] }
  | { ok: false; error: ErrorBody; bytesReceived: number };

export interface NodeConnection {
  readonly name: string;
  readonly config: FarmNodeConfig;
  readonly packfarm: string;
  readonly info: NodeInfo;
  /** have/want: send only the blobs the node lacks. Returns what was sent. */
  ensureBlobs(blobs: readonly BlobSource[]): Promise<{ sent: Digest[]; bytes: number }>;
  /** have/want without sending: which of these blobs the node lacks. */
  lacks(digests: readonly Digest[]): Promise<Digest[]>;
  runTarget(req: RunTargetRequest): Promise<RunTargetOutcome>;
  /** Ask the node to cancel one job (its outcome arrives as a CANCELLED error). */
  cancel(job: string): void;
  /** Closing the channel cancels every job still running there. */
  close(): Promise<void>;
  /** Set once the connection is gone. */
  readonly lost: PackfarmError | undefined;
}

interface PendingJob {
  resolve: (o: RunTargetOutcome) => void;
  req: RunTargetRequest;
  bytesIn: number;
  blobsIn: Digest[];
}

export async function connectNode(node: FarmNodeConfig, opts: ConnectOptions): Promise<NodeConnection> {
  const log = opts.log ?? (() => {});
  const dest = parseNodeUri(node.uri, `node ${node.name}`);
  const child = spawnServe(node, dest, opts);
  const { exited, stderr } = watchExit(child);

  const jobs = new Map<string, PendingJob>();
  const wants = new Map<string, (d: Digest[]) => void>();
  const blobJob = new Map<Digest, { job: PendingJob; receiver: BlobReceiver; done?: Promise<void> }>();
  let lost: PackfarmError | undefined;
  let hello: Extract<FromNode, { type: 'hello' }> | undefined;
  let helloWaiter: ((h: Extract<FromNode, { type: 'hello' }> | PackfarmError) => void) | undefined;

  const fail = (err: PackfarmError) => {
    if (lost) return;
    lost = err;
    helloWaiter?.(err);
    for (const [id, j] of jobs) {
      jobs.delete(id);
      j.resolve({
        ok: false,
        error: {
          code: 'NODE_LOST',
          message: err.message,
          nodeFault: true,
          ...(err.hint ? { hint: err.hint } : {}),
        },
        bytesReceived: j.bytesIn,
      });
    }
    for (const w of wants.values()) w([]);
    wants.clear();
    for (const b of blobJob.values()) b.receiver.abort();
  };

  const onMessage = (m: FromNode, bytes: number) => {
    if (m.type === 'hello') {
      hello = m;
      helloWaiter?.(m);
      return;
    }
    if (m.type === 'want') {
      wants.get(m.id)?.(m.digests);
      wants.delete(m.id);
      return;
    }
    const job = 'job' in m && m.job ? jobs.get(m.job) : undefined;
    if (job) job.bytesIn += bytes;
    switch (m.type) {
      case 'event':
        job?.req.onEvent?.(m);
        return;
      case 'have': {
        void wantImageBlobs(channel, job, m, blobJob);
        return;
      }
      case 'token-request': {
        if (job) void answerTokenRequest(channel, job, m);
        return;
      }
      case 'result': {
        if (!job) return;
        jobs.delete(m.job);
        settleResult(node, job, m.result, blobJob);
        return;
      }
      case 'error': {
        if (!m.job) {
          const err = new PackfarmError(
            isErrorCode(m.error.code) ? m.error.code : 'NODE_JOB_FAILED',
            `node ${node.name}: ${m.error.message}`,
            m.error.hint ? { hint: m.error.hint } : {},
          );
          if (!hello) fail(err);
          else log(err.message);
          return;
        }
        if (!job) return;
        jobs.delete(m.job);
        job.resolve({ ok: false, error: m.error, bytesReceived: job.bytesIn });
        return;
      }
    }
  };

  const channel: Channel = openChannel({
    input: child.stdout as Readable,
    output: child.stdin as NonNullable<ChildProcess['stdin']>,
    source: `node ${node.name}`,
    onFrame: (f) => {
      if (f.kind === 'blob') {
        const b = blobJob.get(f.digest);
        if (!b) return;
        b.job.bytesIn += f.data.length + 37;
        if (f.data.length > 0) b.receiver.write(f.data);
        else {
          b.done = b.receiver.end();
          b.done.catch(() => {});
          b.job.blobsIn.push(f.digest);
        }
        return;
      }
      let m: FromNode;
      try {
        m = parseFromNode(f.value, `node ${node.name}`);
      } catch (err) {
        fail(err as PackfarmError);
        channel.close();
        return;
      }
      onMessage(m, f.bytes);
    },
    onClose: (err) => {
      void exited.then((exit) => {
        fail(err && hello ? err : hello ? nodeGone(node, exit, stderr()) : sshFailure(node, exit, stderr()));
      });
    },
  });

  const greeting = await greet(node, opts, channel, child, (w) => {
    helloWaiter = w;
  });
  let seq = 0;
  const offered = new Map<Digest, Promise<void>>();
  const conn: NodeConnection = {
    name: node.name,
    config: node,
    packfarm: greeting.packfarm,
    info: greeting.node,
    get lost() {
      return lost;
    },
    ensureBlobs: (blobs) =>
      offerBlobs(
        {
          lost: () => lost,
          offered,
          wants,
          channel,
          nextId: () => `b${++seq}-${randomBytes(3).toString('hex')}`,
        },
        blobs,
      ),
    async lacks(digests) {
      if (lost) throw lost;
      const id = `q${++seq}-${randomBytes(3).toString('hex')}`;
      const want = new Promise<Digest[]>((resolve) => wants.set(id, resolve));
      await channel.send({ type: 'have', id, digests: [...digests] });
      const wanted = await want;
      if (lost) throw lost;
      return wanted;
    },
    runTarget(req) {
      if (lost)
        return Promise.resolve({
          ok: false,
          error: { code: 'NODE_LOST', message: lost.message, nodeFault: true },
          bytesReceived: 0,
        });
      return new Promise<RunTargetOutcome>((resolve) => {
        jobs.set(req.job, { resolve, req, bytesIn: 0, blobsIn: [] });
        const msg = {
          type: 'run-target' as const,
          job: req.job,
          node: node.name,
          target: req.target,
          spec: req.spec,
          credentials: req.credentials,
        };
        channel
          .send(msg)
          .catch((err: Error) => fail(new PackfarmError('NODE_LOST', `node ${node.name}: ${err.message}`)));
      });
    },
    cancel(job) {
      if (!lost) channel.send({ type: 'cancel', job }).catch(() => {});
    },
    async close() {
      channel.close();
      const t = setTimeout(() => child.kill('SIGTERM'), 10_000);
      t.unref();
      await exited;
      clearTimeout(t);
    },
  };
  return conn;
}

/**
 * Say hello and wait for the node's: its greeting, or the error that ended the connection first (ssh failing,
 * no hello in time); a node speaking another protocol version is refused.
 */
async function greet(
  node: FarmNodeConfig,
  opts: ConnectOptions,
  channel: Channel,
  child: ChildProcess,
  setWaiter: (w: ((h: Hello | PackfarmError) => void) | undefined) => void,
): Promise<Hello> {
  const timeout = opts.helloTimeoutMs ?? 120_000;
  const greeting = await new Promise<Hello | PackfarmError>((resolve) => {
    setWaiter(resolve);
    const t = setTimeout(
      () =>
        resolve(
          new PackfarmError(
            'NODE_UNREACHABLE',
            `node ${node.name} (${node.uri}): no hello within ${timeout / 1000} s`,
          ),
        ),
      timeout,
    );
    t.unref();
    channel.send({ type: 'hello', protocol: PROTOCOL_VERSION, packfarm: opts.version }).catch(() => {});
  });
  setWaiter(undefined);
  if (greeting instanceof PackfarmError) {
    channel.close();
    child.kill('SIGTERM');
    throw greeting;
  }
  if (greeting.protocol !== PROTOCOL_VERSION) {
    channel.close();
    throw new PackfarmError(
      'PROTOCOL_VERSION',
      `node ${node.name} speaks node protocol ${greeting.protocol} (packfarm ${greeting.packfarm}); this packfarm ${opts.version} speaks ${PROTOCOL_VERSION}`,
      { hint: 'install the same packfarm version on the coordinator and the node' },
    );
  }

  return greeting;
}

/** The node offers a finished job's blobs (oci image, or new cache): ask for those we lack, route them to the job. */
async function wantImageBlobs(
  channel: Channel,
  job: PendingJob | undefined,
  m: Extract<FromNode, { type: 'have' }>,
  blobJob: Map<Digest, { job: PendingJob; receiver: BlobReceiver; done?: Promise<void> }>,
): Promise<void> {
  const want: Digest[] = [];
  const has = m.kind === 'cache' ? job?.req.hasCacheBlob : job?.req.hasBlob;
  const receive = m.kind === 'cache' ? job?.req.receiveCacheBlob : job?.req.receiveBlob;
  if (job && has && receive) {
    for (const d of m.digests as Digest[]) {
      if (blobJob.has(d) || (await has(d))) continue;
      want.push(d);
      blobJob.set(d, { job, receiver: receive(d) });
    }
  }
  await channel.send({ type: 'want', id: m.id, digests: want }).catch(() => {});
}

/** A running job wants a fresh token: issue it (runner: same registry, same scopes) and send it, or the error. */
async function answerTokenRequest(
  channel: Channel,
  job: PendingJob,
  m: Extract<FromNode, { type: 'token-request' }>,
): Promise<void> {
  let answer: Extract<ToNode, { type: 'token' }>;
  try {
    if (!job.req.renewToken) throw new PackfarmError('FARM_UNSUPPORTED', 'this coordinator renews no tokens');
    const credential = await job.req.renewToken(m.registry);
    answer = { type: 'token', job: m.job, id: m.id, credential };
  } catch (err) {
    answer = {
      type: 'token',
      job: m.job,
      id: m.id,
      error: {
        code: isPackfarmError(err) ? err.code : 'INTERNAL',
        message: (err as Error)?.message ?? String(err),
        ...(isPackfarmError(err) && err.hint ? { hint: err.hint } : {}),
      },
    };
  }
  await channel.send(answer).catch(() => {});
}

/** The serve process's exit, and the tail of its stderr (for the message when it is lost). */
function watchExit(child: ChildProcess): {
  exited: Promise<{ code: number | null; signal: string | null }>;
  stderr: () => string;
} {
  let stderr = '';
  child.stderr?.on('data', (c: Buffer) => {
    stderr = (stderr + c.toString()).slice(-8192);
  });
  const exited = new Promise<{ code: number | null; signal: string | null }>((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
    child.on('error', (err) => {
      stderr += `\n${err.message}`;
      resolve({ code: 255, signal: null });
    });
  });
  return { exited, stderr: () => stderr };
}

/** Offer blobs to the node (have/want) and send those it lacks. */
async function offerBlobs(
  link: {
    lost: () => PackfarmError | undefined;
    offered: Map<Digest, Promise<void>>;
    wants: Map<string, (d: Digest[]) => void>;
    channel: Channel;
    nextId: () => string;
  },
  blobs: readonly BlobSource[],
): Promise<{ sent: Digest[]; bytes: number }> {
  const { offered, wants, channel } = link;
  const throwIfLost = () => {
    const lost = link.lost();
    if (lost) throw lost;
  };
  throwIfLost();
  // Blobs this connection already offered (or is offering) for another job are not offered again:
  // two targets placed on one node at once must not both send the app.
  const unique = [...new Map(blobs.map((b) => [b.digest, b])).values()];
  const earlier = unique.filter((b) => offered.has(b.digest)).map((b) => offered.get(b.digest));
  const fresh = unique.filter((b) => !offered.has(b.digest));
  let release!: () => void;
  const done = new Promise<void>((r) => {
    release = r;
  });
  for (const b of fresh) offered.set(b.digest, done);
  try {
    let bytes = 0;
    const sent: Digest[] = [];
    if (fresh.length > 0) {
      const id = link.nextId();
      const want = new Promise<Digest[]>((resolve) => wants.set(id, resolve));
      await channel.send({ type: 'have', id, digests: fresh.map((b) => b.digest) });
      const wanted = await want;
      throwIfLost();
      for (const d of wanted) {
        const b = fresh.find((x) => x.digest === d);
        if (!b) continue;
        bytes += await channel.sendBlob(d, b.open());
        sent.push(d);
      }
    }
    // Frames are ordered: once the earlier offers are through, their blobs precede this job's message.
    await Promise.all(earlier);
    throwIfLost();
    return { sent, bytes };
  } catch (err) {
    for (const b of fresh) offered.delete(b.digest);
    throw err;
  } finally {
    release();
  }
}

/** `packfarm node serve --stdio` on the node: a local process, or over ssh. */
function spawnServe(
  node: FarmNodeConfig,
  dest: ReturnType<typeof parseNodeUri>,
  opts: ConnectOptions,
): ChildProcess {
  const serveArgs = [
    'node',
    'serve',
    '--stdio',
    ...(node.max_jobs ? ['--max-jobs', String(node.max_jobs)] : []),
  ];
  if (dest === 'local') {
    const [cmd, ...args] = opts.localCommand();
    return spawn(cmd as string, [...args, ...serveArgs], {
      stdio: ['pipe', 'pipe', 'pipe'],
      env: opts.env ?? process.env,
    });
  }
  return spawn('ssh', sshArgv(node, serveArgs), {
    stdio: ['pipe', 'pipe', 'pipe'],
    env: opts.env ?? process.env,
  });
}

/** A job's result arrived: resolve it once the image blobs it was sent have been written. */
function settleResult(
  node: FarmNodeConfig,
  job: PendingJob,
  result: Extract<FromNode, { type: 'result' }>['result'],
  blobJob: Map<Digest, { job: PendingJob; receiver: BlobReceiver; done?: Promise<void> }>,
): void {
  void Promise.all(job.blobsIn.map((d) => blobJob.get(d)?.done)).then(
    () => {
      for (const d of job.blobsIn) blobJob.delete(d);
      job.resolve({
        ok: true,
        result,
        bytesReceived: job.bytesIn,
        blobsReceived: job.blobsIn,
      });
    },
    (err: Error) => {
      for (const d of job.blobsIn) blobJob.delete(d);
      job.resolve({
        ok: false,
        error: {
          code: 'TRANSFER_FAILED',
          message: `node ${node.name}: ${err.message}`,
          phase: 'transfer',
          nodeFault: true,
        },
        bytesReceived: job.bytesIn,
      });
    },
  );
}

/** The size of a control message on the wire (for per-target byte counts). */
export function messageBytes(m: unknown): number {
  return encodeMessage(m).length;
}

function nodeGone(
  node: FarmNodeConfig,
  exit: { code: number | null; signal: string | null },
  stderr: string,
): PackfarmError {
  const last = stderr.trim().split('\n').slice(-2).join(' / ');
  return new PackfarmError(
    'NODE_LOST',
    `node ${node.name}: the connection ended (${exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`})${last ? `: ${last}` : ''}`,
  );
}
