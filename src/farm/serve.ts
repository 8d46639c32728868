import { type ChildProcess, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, rm, writeFile } from 'node:fs/promises';
import { cpus, hostname } from 'node:os';
import { join } from 'node:path';
import type { Readable, Writable } from 'node:stream';
import { createInterface } from 'node:readline';
import { openLayoutStore } from '../image/layout-store.js';
import type { Digest } from '../oci/digest.js';
import { isPackfarmError } from '../util/errors.js';
import { parseWith } from '../util/validate.js';
import { ImageManifestSchema } from '../oci/schemas.js';
import { assembleApp } from './app-pieces.js';
import { type BlobCache, type BlobReceiver, openBlobCache } from './blob-cache.js';
import { type WorkerInput, type WorkerOutput, WorkerOutputSchema } from './job.js';
import { extraBlobDigests } from './node-inputs.js';
import { offerCacheBlobs } from './node-cache.js';
import {
  type Channel,
  type DirCacheState,
  type ErrorBody,
  type FromNode,
  type NodeInfo,
  PROTOCOL_VERSION,
  type ToNode,
  openChannel,
  parseToNode,
} from './protocol.js';

/**
 * `packfarm node serve --stdio`: the node end of the protocol, one process per coordinator connection (ssh
 * starts it). Jobs run in child processes (`node run-job`), each the leader of its own process group, so a
 * cancel — a `cancel` message, or the coordinator closing the channel (stdin EOF) — kills the job and every
 * buildpack process under it, and removes its job dir.
 */
/** How long a cancelled job gets to stop its buildpacks before its process group is killed. */
const KILL_GRACE_MS = 5000;

export interface ServeOptions {
  input: Readable;
  output: Writable;
  /** The node's data dir (PACKFARM_HOME …): blobs under farm/blobs, job dirs under farm/jobs. */
  dataDir: string;
  version: string;
  maxJobs?: number;
  /** What this machine runs: native and emulated platforms. */
  platforms: () => Promise<{ native: string[]; emulated: string[] }>;
  /** The command that runs one job: argv, e.g. [node, bin/packfarm.js, 'node', 'run-job']. */
  workerCommand: string[];
  env?: NodeJS.ProcessEnv;
  /** Diagnostics (stderr); the protocol owns stdout. */
  log?: (line: string) => void;
}

interface RunningJob {
  child: ChildProcess;
  dir: string;
  marker: string;
  cancelled: boolean;
}

export async function serveNode(opts: ServeOptions): Promise<void> {
  const log = opts.log ?? (() => {});
  const farmDir = join(opts.dataDir, 'farm');
  const cache: BlobCache = openBlobCache(join(farmDir, 'blobs'));
  const runningDir = join(farmDir, 'running');
  await mkdir(runningDir, { recursive: true });
  // Job dirs left by a serve process that was killed (its jobs killed themselves): nobody owns them.
  await removeDead(join(farmDir, 'jobs'));
  const receiving = new Map<Digest, BlobReceiver>();
  const received = new Map<Digest, Promise<void>>();
  const jobs = new Map<string, RunningJob>();
  const wants = new Map<string, (digests: Digest[]) => void>();
  let helloDone = false;
  let channel!: Channel;
  let resolveClosed!: () => void;
  const closed = new Promise<void>((r) => {
    resolveClosed = r;
  });

  const send = (m: FromNode) => channel.send(m).catch((err: Error) => log(`send ${m.type}: ${err.message}`));
  const sendError = (error: ErrorBody, job?: string) =>
    send({ type: 'error', ...(job ? { job } : {}), error });

  const onMessage = async (m: ToNode) => {
    if (m.type === 'hello') {
      if (m.protocol !== PROTOCOL_VERSION) {
        await sendError({
          code: 'PROTOCOL_VERSION',
          message: `this node speaks packfarm node protocol ${PROTOCOL_VERSION} (packfarm ${opts.version}); the coordinator speaks ${m.protocol} (packfarm ${m.packfarm})`,
          hint: 'install the same packfarm version on the coordinator and the node',
        });
        channel.close();
        return;
      }
      helloDone = true;
      const info = await nodeInfo(opts, runningDir);
      await send({ type: 'hello', protocol: PROTOCOL_VERSION, packfarm: opts.version, node: info });
      return;
    }
    if (!helloDone) {
      await sendError({ code: 'PROTOCOL_ERROR', message: `"${m.type}" before "hello"` });
      channel.close();
      return;
    }
    switch (m.type) {
      case 'have': {
        const missing: Digest[] = [];
        for (const d of m.digests)
          if (!receiving.has(d) && !received.has(d) && !(await cache.has(d))) missing.push(d);
        await send({ type: 'want', id: m.id, digests: missing });
        return;
      }
      case 'want': {
        wants.get(m.id)?.(m.digests);
        wants.delete(m.id);
        return;
      }
      case 'cancel': {
        const j = jobs.get(m.job);
        if (j) killJob(j);
        return;
      }
      case 'run-target':
        await runJob(m);
        return;
      case 'token': {
        // A renewed token for a running job: down its stdin pipe, like the first ones (never a file).
        const j = jobs.get(m.job);
        const line = { type: 'token', id: m.id, credential: m.credential, error: m.error };
        if (j?.child.stdin?.writable) j.child.stdin.write(`${JSON.stringify(line)}\n`);
        return;
      }
    }
  };

  const runJob = async (m: Extract<ToNode, { type: 'run-target' }>) => {
    if (jobs.has(m.job)) {
      await sendError({ code: 'PROTOCOL_ERROR', message: `job ${m.job} is already running` }, m.job);
      return;
    }
    const blobs = await jobBlobs(m, received, cache, sendError);
    if (!blobs) return;
    const job = await startJobProcess(opts, { farmDir, runningDir }, m, blobs, log);
    const { child, dir, marker } = job;
    jobs.set(m.job, job);
    const out = readWorkerOutput(child, m, send, log);
    const exit = await waitForExit(child, m.job, log);
    try {
      await reportOutcome(m.job, job.cancelled, out, exit, {
        send,
        sendError,
        sendImageBlobs,
        sendCacheBlobs: (jobId, committed) =>
          offerCacheBlobs({ channel, wants, send, closed, cache }, jobId, committed),
      });
    } catch (err) {
      await sendError(
        { code: 'TRANSFER_FAILED', message: (err as Error).message, phase: 'transfer', nodeFault: true },
        m.job,
      );
    } finally {
      jobs.delete(m.job);
      await rm(dir, { recursive: true, force: true }).catch(() => {});
      await rm(marker, { force: true }).catch(() => {});
    }
  };

  /** oci output: offer the image's blobs (manifest included), send those the coordinator lacks. */
  const sendImageBlobs = (job: string, layoutDir: string, manifestDigest: Digest) =>
    offerImageBlobs({ channel, wants, send, closed }, job, layoutDir, manifestDigest);

  const onBlob = (digest: Digest, data: Buffer) =>
    receiveBlobFrame(receiving, received, cache, log, digest, data);

  channel = openChannel({
    input: opts.input,
    output: opts.output,
    source: 'coordinator',
    onFrame: (f) => {
      if (f.kind === 'blob') {
        onBlob(f.digest, f.data);
        return;
      }
      let m: ToNode;
      try {
        m = parseToNode(f.value, 'message from the coordinator');
      } catch (err) {
        void sendError({ code: 'PROTOCOL_ERROR', message: (err as Error).message });
        return;
      }
      onMessage(m).catch((err: Error) => {
        log(`${m.type}: ${err.stack ?? err.message}`);
        void sendError({ code: 'INTERNAL', message: err.message }, 'job' in m ? m.job : undefined);
      });
    },
    onClose: (err) => {
      if (err) log(err.message);
      // The coordinator went away (or broke the protocol): cancel everything it started.
      for (const j of jobs.values()) killJob(j);
      for (const r of receiving.values()) r.abort();
      resolveClosed();
    },
  });
  await closed;
  // Wait for killed jobs to be reaped and their dirs removed.
  while (jobs.size > 0) await new Promise((r) => setTimeout(r, 20));
}

/**
 * Start one job's process (`node run-job`), the leader of its own process group, in a fresh job dir with a
 * running marker, and hand it the job on its stdin.
 */
async function startJobProcess(
  opts: ServeOptions,
  where: { farmDir: string; runningDir: string },
  m: Extract<ToNode, { type: 'run-target' }>,
  blobs: Record<string, string>,
  log: (line: string) => void,
): Promise<RunningJob> {
  const { farmDir, runningDir } = where;
  const id = `${process.pid}-${randomBytes(4).toString('hex')}`;
  const dir = join(farmDir, 'jobs', id);
  await mkdir(dir, { recursive: true });
  const marker = join(runningDir, id);
  await writeFile(marker, `${m.target}\n`);
  const input: WorkerInput = {
    job: m.job,
    node: m.node,
    target: m.target,
    spec: m.spec,
    jobDir: dir,
    dataDir: opts.dataDir,
    blobs,
    credentials: m.credentials,
  };
  const [cmd, ...args] = opts.workerCommand;
  const child = spawn(cmd as string, args, {
    stdio: ['pipe', 'pipe', 'pipe'],
    detached: true, // its own process group: a cancel kills it and every buildpack process at once
    env: opts.env ?? process.env,
  });
  // The credentials travel through this pipe only: never a file, never an argument or variable. It stays
  // open for renewed tokens (one JSON line each) until the job exits.
  child.stdin?.on('error', () => {});
  child.stdin?.write(`${JSON.stringify(input)}\n`);
  child.stderr?.on('data', (c: Buffer) => log(`job ${m.job}: ${c.toString().trimEnd()}`));
  return { child, dir, marker, cancelled: false };
}

/**
 * Cancel a job: SIGTERM to its process group (the job aborts its build, and the executor stops the
 * buildpack processes in their own groups), SIGKILL to the group if it is still there after a grace period.
 */
function killJob(j: RunningJob): void {
  j.cancelled = true;
  const pid = j.child.pid;
  const running = () => j.child.exitCode === null && j.child.signalCode === null;
  if (pid === undefined || !running()) return;
  const signalGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-pid, sig);
    } catch {
      // already gone
    }
  };
  signalGroup('SIGTERM');
  setTimeout(() => {
    if (running()) signalGroup('SIGKILL');
  }, KILL_GRACE_MS).unref();
}

/** What the node tells the coordinator about itself in "hello". */
async function nodeInfo(opts: ServeOptions, runningDir: string): Promise<NodeInfo> {
  const p = await opts.platforms();
  return {
    native: p.native,
    emulated: p.emulated,
    cpus: Math.max(1, cpus().length),
    maxJobs: opts.maxJobs ?? Math.max(1, cpus().length),
    runningJobs: await countRunning(runningDir),
    hostname: hostname(),
  };
}

/**
 * Forward a job process's events and logs to the coordinator as they arrive; the returned state holds the
 * last phase seen and the job's outcome (its result or error) once it is printed.
 */
function readWorkerOutput(
  child: ChildProcess,
  m: Extract<ToNode, { type: 'run-target' }>,
  send: (msg: FromNode) => Promise<void>,
  log: (line: string) => void,
): { outcome: WorkerOutput | undefined; phase: string | undefined } {
  const state: { outcome: WorkerOutput | undefined; phase: string | undefined } = {
    outcome: undefined,
    phase: undefined,
  };
  const lines = createInterface({ input: child.stdout as Readable });
  lines.on('line', (line) => {
    let msg: WorkerOutput;
    try {
      msg = parseWith(WorkerOutputSchema, JSON.parse(line), `job ${m.job} output`);
    } catch {
      log(`job ${m.job}: ${line}`);
      return;
    }
    if (msg.type === 'event') {
      if (msg.phase) state.phase = msg.phase;
      void send({
        type: 'event',
        job: m.job,
        node: m.node,
        target: m.target,
        ...(msg.phase ? { phase: msg.phase } : {}),
        event: msg.event,
      });
    } else if (msg.type === 'token-request') {
      void send({ type: 'token-request', job: m.job, id: msg.id, registry: msg.registry });
    } else if (msg.type === 'log') {
      void send({
        type: 'event',
        job: m.job,
        node: m.node,
        target: m.target,
        ...(state.phase ? { phase: state.phase } : {}),
        event: { type: 'log', level: msg.level, message: msg.message },
      });
    } else state.outcome = msg;
  });
  return state;
}

function waitForExit(
  child: ChildProcess,
  job: string,
  log: (line: string) => void,
): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  return new Promise((resolve) => {
    child.on('close', (code, signal) => resolve({ code, signal }));
    child.on('error', (err) => {
      log(`job ${job}: ${err.message}`);
      resolve({ code: null, signal: null });
    });
  });
}

/** The cached paths of the job's blobs (waiting for those still arriving); undefined after reporting one missing. */
async function jobBlobs(
  m: Extract<ToNode, { type: 'run-target' }>,
  received: Map<Digest, Promise<void>>,
  cache: BlobCache,
  sendError: (error: ErrorBody, job?: string) => Promise<unknown>,
): Promise<Record<string, string> | undefined> {
  const app = m.spec.app;
  if (app.index && !received.has(app.digest) && !(await cache.has(app.digest))) {
    // The app came as pieces: once every blob in flight has landed, rebuild its tar.
    await Promise.all([...received.values()].map((p) => p.catch(() => undefined)));
    try {
      await assembleApp(cache, { ...app, index: app.index });
    } catch (err) {
      await sendError(
        {
          code: isPackfarmError(err) ? err.code : 'BLOB_MISSING',
          message: (err as Error).message,
          phase: 'transfer',
          nodeFault: true,
        },
        m.job,
      );
      return undefined;
    }
  }
  const digests = [
    app.digest,
    ...m.spec.buildpacks.flatMap((b) => ('digest' in b ? [b.digest] : [])),
    ...extraBlobDigests(m.spec),
  ];
  const blobs: Record<string, string> = {};
  for (const d of digests) {
    await received.get(d)?.catch(() => undefined);
    if (!(await cache.has(d))) {
      await sendError(
        {
          code: 'BLOB_MISSING',
          message: `node has no blob ${d} for job ${m.job} (send it with have/want first)`,
          phase: 'transfer',
          nodeFault: true,
        },
        m.job,
      );
      return undefined;
    }
    blobs[d] = cache.path(d);
  }
  return blobs;
}

/** Tell the coordinator how a finished job ended: cancelled, its result (with an oci image's blobs), or an error. */
async function reportOutcome(
  job: string,
  cancelled: boolean,
  out: { outcome: WorkerOutput | undefined; phase: string | undefined },
  exit: { code: number | null; signal: NodeJS.Signals | null },
  io: {
    send: (msg: FromNode) => Promise<unknown>;
    sendError: (error: ErrorBody, job?: string) => Promise<unknown>;
    sendImageBlobs: (job: string, layoutDir: string, manifestDigest: Digest) => Promise<void>;
    /** --cache-dir: offer the new cache's layers; its state goes into the result. */
    sendCacheBlobs: (job: string, committed: string) => Promise<DirCacheState | undefined>;
  },
): Promise<void> {
  const { send, sendError, sendImageBlobs, sendCacheBlobs } = io;
  if (cancelled) {
    await sendError(
      {
        code: 'CANCELLED',
        message: `job ${job} was cancelled`,
        ...(out.phase ? { phase: out.phase } : {}),
      },
      job,
    );
  } else if (out.outcome?.type === 'result') {
    if (out.outcome.layout) await sendImageBlobs(job, out.outcome.layout, out.outcome.digest as Digest);
    const cache = out.outcome.cacheCommitted
      ? await sendCacheBlobs(job, out.outcome.cacheCommitted)
      : undefined;
    await send({
      type: 'result',
      job,
      result: {
        digest: out.outcome.digest as Digest,
        size: out.outcome.size,
        mediaType: out.outcome.mediaType,
        report: out.outcome.report,
        ...(cache ? { cache } : {}),
      },
    });
  } else if (out.outcome?.type === 'error') {
    await sendError(out.outcome.error, job);
  } else {
    await sendError(
      {
        code: 'JOB_DIED',
        message: `the job process on ${hostname()} ended without a result (${exit.signal ? `signal ${exit.signal}` : `exit code ${exit.code}`})`,
        ...(out.phase ? { phase: out.phase } : {}),
        nodeFault: true,
      },
      job,
    );
  }
}

/** oci output: offer the image's blobs (manifest included), send those the coordinator lacks. */
async function offerImageBlobs(
  link: {
    channel: Channel;
    wants: Map<string, (digests: Digest[]) => void>;
    send: (msg: FromNode) => Promise<unknown>;
    closed: Promise<void>;
  },
  job: string,
  layoutDir: string,
  manifestDigest: Digest,
): Promise<void> {
  const { channel, wants, send, closed } = link;
  const store = await openLayoutStore(layoutDir);
  const manifest = await store.getManifest(manifestDigest);
  const doc = parseWith(
    ImageManifestSchema,
    JSON.parse(manifest.bytes.toString('utf8')),
    `${layoutDir} ${manifestDigest}`,
  );
  const digests = [doc.config.digest, ...doc.layers.map((l) => l.digest), manifestDigest] as Digest[];
  const id = `${job}:image`;
  const wanted = new Promise<Digest[]>((resolve) => wants.set(id, resolve));
  await send({ type: 'have', id, job, digests });
  const want = await Promise.race([wanted, closed.then(() => [] as Digest[])]);
  for (const d of want) {
    if (!digests.includes(d)) continue;
    await channel.sendBlob(d, createReadStream(store.blobPath(d)));
  }
}

/** A blob frame from the coordinator: data goes to the blob's receiver; an empty frame ends the blob. */
function receiveBlobFrame(
  receiving: Map<Digest, BlobReceiver>,
  received: Map<Digest, Promise<void>>,
  cache: BlobCache,
  log: (line: string) => void,
  digest: Digest,
  data: Buffer,
): void {
  let r = receiving.get(digest);
  if (!r) {
    r = cache.receive(digest);
    receiving.set(digest, r);
  }
  if (data.length > 0) {
    r.write(data);
    return;
  }
  receiving.delete(digest);
  const done = r.end();
  received.set(digest, done);
  done.then(
    () => received.delete(digest),
    (err: Error) => {
      received.delete(digest);
      log(err.message);
    },
  );
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove `<dir>/<pid>-…` entries of processes that no longer run. */
async function removeDead(dir: string): Promise<void> {
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = Number(name.split('-')[0]);
    if (Number.isInteger(pid) && pid > 0 && !alive(pid))
      await rm(join(dir, name), { recursive: true, force: true }).catch(() => {});
  }
}

/** Jobs running on this node, across every serve process (markers of live serve processes only). */
async function countRunning(dir: string): Promise<number> {
  let n = 0;
  for (const name of await readdir(dir).catch(() => [] as string[])) {
    const pid = Number(name.split('-')[0]);
    if (!Number.isInteger(pid) || pid <= 0) continue;
    if (alive(pid)) n++;
    else await rm(join(dir, name), { force: true }).catch(() => {});
  }
  return n;
}
