import { createReadStream } from 'node:fs';
import { mkdir, readFile, rm, stat } from 'node:fs/promises';
import { cpus, hostname, tmpdir } from 'node:os';
import { dirname, isAbsolute, join, relative, resolve } from 'node:path';
import type { BuildEvent, BuildEventListener } from '../api/events.js';
import { isLocalBuildpackage, projectBuildpacksInUse } from '../api/buildpacks.js';
import type { BuildPlan, TargetPlan } from '../api/plan.js';
import { type RunTargetHooks, type TargetReport, runTarget } from '../api/run-target.js';
import type { MachinePlatforms } from '../api/targets.js';
import { digestFile, writeLayer } from '../archive/index.js';
import { extractLayer } from '../archive/extract.js';
import { readBaseImage } from '../image/read.js';
import { resolveProjectBuildpack } from '../platform/project.js';
import { openImage } from '../image/transport.js';
import type { ImageStore } from '../image/store.js';
import type { Digest } from '../oci/digest.js';
import { type Platform, parsePlatform, platformsEqual } from '../oci/platform.js';
import { ImageManifestSchema } from '../oci/schemas.js';
import { isErrorCode } from '../util/error-codes.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';
import { type AppPieces, sendApp, splitAppTar } from './app-pieces.js';
import { type BlobCache, openBlobCache } from './blob-cache.js';
import { type BlobSource, type NodeConnection, connectNode, messageBytes } from './client.js';
import { type LocalInputs, localImage, prepareLocalInputs, startCacheReturn } from './local-inputs.js';
import { type FarmNodeConfig, LOCAL_NODE } from './config.js';
import { renewJobCredential, scopedJobCredentials } from './credentials.js';
import { isNodeFault } from './job.js';
import { copyToOtherOutputs, tagOutputs } from './outputs.js';
import { PACKFARM_VERSION, localPackfarmCommand } from './manage.js';
import { nodePlatforms } from './platforms.js';
import type { ErrorBody, LocalImage, TargetJob } from './protocol.js';
import {
  type Assignment,
  type NodeCapacity,
  type PendingTarget,
  type UnreachableNode,
  assignTargets,
  checkPlacement,
  hasCandidate,
} from './schedule.js';
import { makeTempDir } from '../util/tempdir.js';

/**
 * The farm as a target runner for build(): every target of a plan goes to a node the scheduler picks (native
 * first, then emulated, by free capacity), over that node's one connection; `local` runs in this process.
 * A node that fails a target (connection lost, job process killed, disk full) gets the target retried once on
 * another matching node; anything else fails the build (build() then writes no tag). Closing the farm closes
 * every connection, which cancels every remote job.
 */
export interface FarmOptions {
  nodes: readonly FarmNodeConfig[];
  env: NodeJS.ProcessEnv;
  onEvent?: BuildEventListener;
  /** Temp space for the app and buildpack blobs sent to nodes. */
  tmpDir?: string;
}

export interface FarmRunner {
  /** Every platform some reachable node runs (native wins): what planBuild may accept as targets. */
  machine: MachinePlatforms;
  /** Job slots over all reachable nodes: how many targets build() should start at once. */
  slots: number;
  nodes: Array<{ name: string; reachable: boolean; error?: string }>;
  /** Throws NO_NODE_FOR_PLATFORM (listing every node) when a target has no reachable node that may run it. */
  check(targets: readonly Platform[]): void;
  runTarget(plan: BuildPlan, target: TargetPlan, hooks: RunTargetHooks): Promise<TargetReport>;
  close(): Promise<void>;
}

interface FarmNode {
  config: FarmNodeConfig;
  capacity: NodeCapacity;
  /** undefined: the local node, run in this process. */
  conn?: NodeConnection | undefined;
  /** Jobs other builds run there (from its hello): they count against its capacity at first. */
  foreign: number;
}

/** A buildpackage on this machine's disk (`oci:DIR[:TAG]`, a `.cnb` file unpacked): sent per target platform. */
interface LocalPackage {
  name: string;
  /** `oci:<absolute dir>[:TAG]`. */
  location: string;
  /** Per platform: the job's description of its image for that platform, and the blobs. */
  forPlatform: Map<string, Promise<{ image: LocalImage; blobs: BlobSource[] }>>;
}

interface PreparedPlan {
  dir: string;
  app: BlobSource;
  /** The app tar cut into content-addressed pieces (app-pieces.ts). */
  appPieces: AppPieces;
  buildpacks: Array<(BlobSource & { name: string }) | { ref: string } | LocalPackage>;
  /** Blobs a node sends back for an oci output land here before going into the layout. */
  received: BlobCache;
  /** Images, a builder dir and a --cache-dir that only this machine has (sent as blobs). */
  local: LocalInputs;
  /** project.toml's buildpackages on this machine's disk, by their uri as written there. */
  projectPackages: Array<{ uri: string; pkg: LocalPackage }>;
}

export async function openFarm(opts: FarmOptions): Promise<FarmRunner> {
  const { nodes, unreachable } = await connectNodes(opts);
  const machine = unionMachine(nodes.map((n) => n.capacity));
  const { live, acquire, release, cancelWaiting } = createSlots(nodes, unreachable);
  const checked = new WeakMap<BuildPlan, Promise<void>>();
  const prepared = new WeakMap<BuildPlan, Promise<PreparedPlan>>();
  const tempDirs: string[] = [];
  let closed = false;

  const runner: FarmRunner = {
    machine,
    slots: nodes.reduce((a, n) => a + n.capacity.maxJobs, 0),
    nodes: [
      ...nodes.map((n) => ({ name: n.config.name, reachable: true })),
      ...unreachable.map((u) => ({ name: u.name, reachable: false, error: u.error })),
    ],
    check(targets) {
      checkPlacement(
        targets,
        live().map((n) => n.capacity),
        unreachable,
      );
    },
    async runTarget(plan, target, hooks) {
      if (closed) throw new PackfarmError('ABORTED', 'the farm was closed', { exitCode: 130 });
      // A volume names a path on this machine; a node would build without it, so a farm with remote nodes refuses.
      const vol = plan.options.volumes[0];
      if (vol && nodes.some((n) => n.conn))
        throw new PackfarmError(
          'EXECUTOR_UNSUPPORTED',
          `--volume ${vol.host}:${vol.target}: farm nodes cannot mount a path of this machine`,
          {
            hint: 'build without --farm to mount it, or give the buildpacks what they need through the app dir',
          },
        );
      let check = checked.get(plan);
      if (!check) {
        check = Promise.resolve().then(() =>
          checkPlacement(
            plan.targets.map((t) => t.platform),
            live().map((n) => n.capacity),
            unreachable,
          ),
        );
        checked.set(plan, check);
      }
      await check;
      const attempts: Array<{ node: string; code: string; message: string }> = [];
      const exclude = new Set<string>();
      for (let attempt = 1; ; attempt++) {
        const a = await acquire({ target: target.name, platform: target.platform, exclude }, hooks.signal);
        const node = nodes.find((n) => n.config.name === a.node)!;
        hooks.onEvent?.({
          type: 'placed',
          target: target.name,
          phase: 'analyze',
          node: a.node,
          runs: a.mode,
          attempt,
        });
        let failure: ErrorBody;
        try {
          const r = node.conn
            ? await runRemote({ opts, prepared, tempDirs }, node.conn, plan, target, hooks, attempts)
            : await runLocal(plan, target, hooks, attempts);
          if (r.ok) return r.report;
          failure = r.error;
        } catch (err) {
          if (hooks.signal?.aborted) throw err;
          failure = {
            code: isPackfarmError(err) ? err.code : 'INTERNAL',
            message: (err as Error)?.message ?? String(err),
            ...(isNodeFault(err) ? { nodeFault: true } : {}),
          };
        } finally {
          release(a.node);
        }
        attempts.push({ node: a.node, code: failure.code, message: failure.message });
        exclude.add(a.node);
        const again = failure.nodeFault === true && attempt === 1 && !hooks.signal?.aborted;
        if (
          again &&
          hasCandidate(
            { target: target.name, platform: target.platform, exclude },
            live().map((n) => n.capacity),
          )
        ) {
          hooks.onEvent?.({
            type: 'retry',
            target: target.name,
            phase: (failure.phase as BuildEvent['phase']) ?? 'analyze',
            node: a.node,
            message: `node ${a.node} failed: ${failure.message}; retrying on another node`,
          });
          continue;
        }
        const tried = attempts.map((t) => t.node).join(', then ');
        throw new PackfarmError(
          isErrorCode(failure.code) ? failure.code : 'NODE_JOB_FAILED',
          `${failure.message} (on node ${tried}${failure.nodeFault && attempt > 1 ? '; retried once' : ''})`,
          failure.hint ? { hint: failure.hint } : {},
        );
      }
    },
    async close() {
      closed = true;
      cancelWaiting();
      await Promise.all(nodes.map((n) => n.conn?.close()));
      for (const d of tempDirs) await rm(d, { recursive: true, force: true }).catch(() => {});
    },
  };

  return runner;
}

/** What a remote target's run needs of its farm: options, the plans prepared so far, temp dirs to remove. */
interface RemoteContext {
  opts: FarmOptions;
  prepared: WeakMap<BuildPlan, Promise<PreparedPlan>>;
  tempDirs: string[];
}

/** The local node: the target runs in this process, as a local build runs it. */
async function runLocal(
  plan: BuildPlan,
  target: TargetPlan,
  hooks: RunTargetHooks,
  attempts: Array<{ node: string; code: string; message: string }>,
): Promise<{ ok: true; report: TargetReport }> {
  const report = await runTarget(plan, target, hooks);
  return {
    ok: true,
    report: {
      ...report,
      farm: {
        node: LOCAL_NODE,
        attempts: [...attempts],
        bytesSent: 0,
        bytesReceived: 0,
        blobsSent: 0,
        blobsReceived: 0,
      },
    },
  };
}

/** A remote node: the app, buildpacks and local inputs by have/want, then the job; the image comes back or is pushed. */
async function runRemote(
  ctx: RemoteContext,
  conn: NodeConnection,
  plan: BuildPlan,
  target: TargetPlan,
  hooks: RunTargetHooks,
  attempts: Array<{ node: string; code: string; message: string }>,
): Promise<{ ok: true; report: TargetReport } | { ok: false; error: ErrorBody }> {
  const { opts, prepared, tempDirs } = ctx;
  let prep = prepared.get(plan);
  if (!prep) {
    prep = preparePlan(plan, opts.tmpDir).then((p) => {
      tempDirs.push(p.dir);
      return p;
    });
    prepared.set(plan, prep);
  }
  const p = await prep;
  const local = await p.local.forTarget(target);
  const bps = await targetBuildpacks(p, target);
  const spec: TargetJob = {
    ...targetJob(plan, target, p, bps.spec),
    ...local.spec,
    ...(bps.project ? { projectBuildpacks: bps.project } : {}),
  };
  const blobs: BlobSource[] = [...bps.blobs, ...local.blobs];
  let sent: { sent: Digest[]; bytes: number };
  try {
    // The app as pieces (only those the node lacks), then the buildpacks.
    const app = await sendApp(conn, p.app, p.appPieces);
    const rest = await conn.ensureBlobs(blobs);
    sent = { sent: [...app.sent, ...rest.sent], bytes: app.bytes + rest.bytes };
  } catch (err) {
    return {
      ok: false,
      error: { code: 'NODE_LOST', message: (err as Error).message, phase: 'transfer', nodeFault: true },
    };
  }
  const output = plan.outputs[0]!;
  const job = `${target.name}#${attempts.length + 1}`;
  // Per job, so a token's lifetime starts when the job does.
  const credentials = await scopedJobCredentials(plan, target, {
    env: opts.env,
    insecureRegistries: plan.insecureRegistries,
  });
  const msg = {
    type: 'run-target',
    job,
    node: conn.name,
    target: target.name,
    spec,
    credentials,
  };
  // build() aborts the other targets when one fails: cancel this one's remote job then.
  const onAbort = () => conn.cancel(job);
  hooks.signal?.addEventListener('abort', onAbort, { once: true });
  // --cache-dir: the node's new cache comes back into this cache dir (committed once the target succeeded).
  const cacheBack = plan.options.cacheDir ? await startCacheReturn(plan.options.cacheDir, target) : undefined;
  const outcome = await conn
    .runTarget({
      job,
      target: target.name,
      spec,
      credentials,
      // A job that outlives its tokens asks for fresh ones: the same registry and scopes, newly issued.
      renewToken: (registry) =>
        renewJobCredential(credentials, registry, {
          env: opts.env,
          insecureRegistries: plan.insecureRegistries,
        }),
      onEvent: (e) => hooks.onEvent?.(e.event as unknown as BuildEvent),
      ...(spec.output.kind === 'oci'
        ? {
            hasBlob: async (d: Digest) => (await output.store.hasBlob(d)) || (await p.received.has(d)),
            receiveBlob: (d: Digest) => p.received.receive(d),
          }
        : {}),
      ...(cacheBack ? { hasCacheBlob: cacheBack.has, receiveCacheBlob: cacheBack.receive } : {}),
    })
    .catch(async (err: unknown) => {
      await cacheBack?.abort();
      throw err;
    });
  hooks.signal?.removeEventListener('abort', onAbort);
  if (!outcome.ok) {
    await cacheBack?.abort();
    return { ok: false, error: outcome.error };
  }
  const result = outcome.result;
  if (cacheBack) {
    if (result.cache) await cacheBack.commit(result.cache);
    else await cacheBack.abort();
  }
  const digest = result.digest;
  if (spec.output.kind === 'oci')
    await storeReceivedImage(output.store, p.received, digest, result.mediaType);
  // --tag in other repositories: the coordinator copies the image there (the node could not push there).
  const copied = await copyToOtherOutputs(plan, digest, hooks.signal);
  // One target (no index): the image itself gets the tags, as a local build would have written them.
  const tags = plan.index ? undefined : await tagOutputs(plan, digest);
  const report = result.report as unknown as TargetReport;
  return {
    ok: true,
    report: {
      ...report,
      bytesUploaded: (report.bytesUploaded ?? 0) + copied,
      ...(tags ? { tags } : {}),
      farm: {
        node: conn.name,
        attempts: [...attempts],
        bytesSent: sent.bytes + messageBytes(msg),
        bytesReceived: outcome.bytesReceived,
        blobsSent: sent.sent.length,
        blobsReceived: outcome.blobsReceived.length,
      },
    },
  };
}

/** Connect every node of the farm at once; the unreachable ones are listed (and warned about), not fatal. */
async function connectNodes(
  opts: FarmOptions,
): Promise<{ nodes: FarmNode[]; unreachable: UnreachableNode[] }> {
  if (opts.nodes.length === 0)
    throw new PackfarmError('FARM_EMPTY', 'the farm has no nodes', {
      hint: 'add one with `packfarm farm node add FARM ssh://user@host` (or `local`)',
    });
  const unreachable: UnreachableNode[] = [];
  const nodes: FarmNode[] = [];
  const connected = await Promise.all(
    opts.nodes.map(async (config) => {
      try {
        if (config.uri === LOCAL_NODE) {
          const p = await nodePlatforms();
          const max = config.max_jobs ?? Math.max(1, cpus().length);
          return { config, info: { ...p, maxJobs: max, runningJobs: 0 }, conn: undefined };
        }
        const conn = await connectNode(config, {
          version: PACKFARM_VERSION,
          localCommand: localPackfarmCommand,
          env: opts.env,
        });
        return { config, info: conn.info, conn };
      } catch (error) {
        return { config, error };
      }
    }),
  );
  for (const c of connected) {
    if ('error' in c) {
      const message = (c.error as Error)?.message ?? String(c.error);
      unreachable.push({ name: c.config.name, error: message });
      opts.onEvent?.({
        type: 'warning',
        target: '',
        phase: 'plan',
        message: `node ${c.config.name} is unreachable: ${message}`,
      });
      continue;
    }
    const parse = (ps: string[], what: string) =>
      ps.map((p) => parsePlatform(p, `node ${c.config.name} ${what}`));
    const maxJobs = Math.max(1, Math.min(c.config.max_jobs ?? c.info.maxJobs, c.info.maxJobs));
    nodes.push({
      config: c.config,
      conn: c.conn,
      foreign: c.info.runningJobs,
      capacity: {
        name: c.config.name,
        native: parse(c.info.native, 'native platforms'),
        emulated: parse(c.info.emulated, 'emulated platforms'),
        ...(c.config.platforms ? { restrict: parse(c.config.platforms, 'platforms') } : {}),
        maxJobs,
      },
    });
  }
  if (nodes.length === 0)
    throw new PackfarmError(
      'NO_REACHABLE_NODE',
      `no node of the farm is reachable:\n${unreachable.map((u) => `  ${u.name}: ${u.error}`).join('\n')}`,
      { hint: 'check the nodes with `packfarm farm ls`' },
    );

  return { nodes, unreachable };
}

/**
 * The farm's job slots: targets wait for a node the scheduler picks (schedule.ts), in target order; a node's
 * slot is released when its target ends. Targets no live node can take fail with NO_NODE_FOR_PLATFORM.
 */
function createSlots(nodes: readonly FarmNode[], unreachable: readonly UnreachableNode[]) {
  const live = () => nodes.filter((n) => !n.conn?.lost);
  const load = new Map<string, number>();
  const waiters: Array<{ p: PendingTarget; resolve: (a: Assignment) => void; reject: (e: Error) => void }> =
    [];
  const running = () => {
    const m = new Map<string, number>();
    for (const n of nodes) m.set(n.config.name, (load.get(n.config.name) ?? 0) + n.foreign);
    return m;
  };
  /** Hand out free slots to waiting targets, in target order; fail those no live node can take. */
  const pump = () => {
    waiters.sort((a, b) => (a.p.target < b.p.target ? -1 : a.p.target > b.p.target ? 1 : 0));
    const caps = live().map((n) => n.capacity);
    for (const w of [...waiters]) {
      if (!hasCandidate(w.p, caps)) {
        waiters.splice(waiters.indexOf(w), 1);
        w.reject(noNodeLeft(w.p, nodes, unreachable));
      }
    }
    let got = assignTargets(
      waiters.map((w) => w.p),
      caps,
      running(),
    );
    // Jobs of other builds block a node only while ours run too: never wait forever on a node we cannot see.
    if (got.length === 0 && waiters.length > 0 && [...load.values()].every((v) => v === 0))
      got = assignTargets(
        waiters.map((w) => w.p),
        caps,
        new Map(),
      );
    for (const a of got) {
      const i = waiters.findIndex((w) => w.p.target === a.target);
      const w = waiters[i];
      if (!w) continue;
      waiters.splice(i, 1);
      load.set(a.node, (load.get(a.node) ?? 0) + 1);
      w.resolve(a);
    }
  };
  const acquire = (p: PendingTarget, signal?: AbortSignal) =>
    new Promise<Assignment>((resolveA, reject) => {
      const w = { p, resolve: resolveA, reject };
      if (signal?.aborted)
        return reject(new PackfarmError('ABORTED', 'the build was cancelled', { exitCode: 130 }));
      signal?.addEventListener(
        'abort',
        () => {
          const i = waiters.indexOf(w);
          if (i >= 0) {
            waiters.splice(i, 1);
            reject(new PackfarmError('ABORTED', 'the build was cancelled', { exitCode: 130 }));
          }
        },
        { once: true },
      );
      waiters.push(w);
      pump();
    });
  const release = (node: string) => {
    load.set(node, Math.max(0, (load.get(node) ?? 1) - 1));
    pump();
  };

  /** The farm is closed: every target still waiting for a slot fails. */
  const cancelWaiting = () => {
    for (const w of waiters.splice(0))
      w.reject(new PackfarmError('ABORTED', 'the farm was closed', { exitCode: 130 }));
  };
  return { live, acquire, release, cancelWaiting };
}

/** What every node of a build gets once: the app as a tar cut into pieces (app-pieces.ts), the buildpacks as blobs. */
async function preparePlan(plan: BuildPlan, tmp: string | undefined): Promise<PreparedPlan> {
  const opts = plan.options;
  const dir = await makeTempDir(tmp ?? tmpdir(), 'farm');
  try {
    // The app, as the node will see it: project.toml's include/exclude applied, project.toml itself kept.
    const descriptor = opts.descriptor ? resolve(plan.cwd, opts.descriptor) : undefined;
    if (descriptor && relative(plan.appPath, descriptor).startsWith('..'))
      throw new PackfarmError(
        'FARM_UNSUPPORTED',
        `--descriptor ${descriptor}: on a farm it must be inside the app dir ${plan.appPath}`,
      );
    const filter = plan.appFilter;
    // Uncompressed: the node rebuilds these exact bytes from pieces (app-pieces.ts), each sent compressed.
    const appFile = join(dir, 'app.tar');
    const app = await writeLayer({
      dir: plan.appPath,
      out: appFile,
      compression: 'none',
      ...(filter
        ? {
            filter: (rel: string, st) =>
              rel === 'project.toml' ||
              (descriptor !== undefined && join(plan.appPath, rel) === descriptor) ||
              filter(rel, st.isDirectory()),
          }
        : {}),
    });
    const buildpacks: PreparedPlan['buildpacks'] = [];
    for (const [i, flag] of opts.buildpacks.entries()) {
      const path = isAbsolute(flag) ? flag : resolve(plan.cwd, flag);
      const st = await stat(path).catch(() => undefined);
      if (isLocalBuildpackage(flag) && !st?.isDirectory()) {
        buildpacks.push(await localPackage(flag, plan.cwd, join(dir, `buildpackage-${i}`)));
        continue;
      }
      if (!st) {
        buildpacks.push({ ref: flag });
        continue;
      }
      let file = path;
      if (st.isDirectory()) {
        file = join(dir, `buildpack-${i}.tar.gz`);
        await writeLayer({ dir: path, out: file });
      }
      const d = await digestFile(file);
      buildpacks.push({ digest: d.digest, size: d.size, name: flag, open: () => createReadStream(file) });
    }
    // project.toml's, those this build runs.
    const project = plan.project;
    const projectPackages: PreparedPlan['projectPackages'] = [];
    for (const [i, b] of projectBuildpacksInUse(opts.buildpacks, project).entries()) {
      if (!project || b.script || b.uri === undefined || projectPackages.some((p) => p.uri === b.uri))
        continue;
      if (!isLocalBuildpackage(b.uri)) continue;
      const src = resolveProjectBuildpack(b, dirname(project.source));
      if (src.kind !== 'package') continue;
      const pkg = await localPackage(src.uri, plan.cwd, join(dir, `project-buildpackage-${i}`));
      projectPackages.push({ uri: b.uri, pkg: { ...pkg, name: `${project.source} uri ${b.uri}` } });
    }
    return {
      dir,
      projectPackages,
      app: { digest: app.digest, size: app.size, open: () => createReadStream(appFile) },
      appPieces: await splitAppTar(appFile, { digest: app.digest, size: app.size }, dir),
      buildpacks,
      received: openBlobCache(join(dir, 'received')),
      local: await prepareLocalInputs(plan, dir),
    };
  } catch (err) {
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

/**
 * The job's buildpacks for one target: blobs by digest, builder refs, and buildpackages of this machine as
 * their image for the target's platform (only that child of an index is sent).
 */
async function targetBuildpacks(
  p: PreparedPlan,
  target: TargetPlan,
): Promise<{
  spec: TargetJob['buildpacks'];
  blobs: BlobSource[];
  project?: NonNullable<TargetJob['projectBuildpacks']>;
}> {
  const spec: TargetJob['buildpacks'] = [];
  const blobs: BlobSource[] = [];
  for (const b of p.buildpacks) {
    if ('ref' in b) spec.push({ ref: b.ref });
    else if ('location' in b) {
      const { image, blobs: more } = await packageFor(b, target);
      spec.push({ package: image, name: b.name.replace(/^--buildpack /, '') });
      blobs.push(...more);
    } else {
      spec.push({ digest: b.digest, size: b.size, name: b.name });
      blobs.push(b);
    }
  }
  const project: NonNullable<TargetJob['projectBuildpacks']> = [];
  for (const { uri, pkg } of p.projectPackages) {
    const { image, blobs: more } = await packageFor(pkg, target);
    project.push({ uri, package: image });
    blobs.push(...more);
  }
  return { spec, blobs, ...(project.length > 0 ? { project } : {}) };
}

function packageFor(
  b: LocalPackage,
  target: TargetPlan,
): Promise<{ image: LocalImage; blobs: BlobSource[] }> {
  let got = b.forPlatform.get(target.name);
  if (!got) {
    got = packageImage(b, target);
    b.forPlatform.set(target.name, got);
  }
  return got;
}

async function localPackage(flag: string, cwd: string, scratch: string): Promise<LocalPackage> {
  let location: string;
  if (flag.startsWith('oci:')) location = `oci:${resolve(cwd, flag.slice(4))}`;
  else {
    // A .cnb file is an OCI layout in a tar: unpacked here once, sent as the layout's image.
    const file = resolve(cwd, flag.startsWith('file://') ? flag.slice(7) : flag);
    await mkdir(scratch, { recursive: true });
    await extractLayer({ source: createReadStream(file), dest: scratch, name: `buildpackage ${file}` }).catch(
      (err: unknown) => {
        throw new PackfarmError(
          'BUILDPACKAGE_INVALID',
          `--buildpack ${flag}: ${file} is not a readable .cnb file: ${(err as Error).message}`,
          { hint: 'a .cnb file is an OCI image layout in a tar (packfarm buildpack package --format file)' },
        );
      },
    );
    location = `oci:${scratch}`;
  }
  return { name: `--buildpack ${flag}`, location, forPlatform: new Map() };
}

async function packageImage(
  b: LocalPackage,
  target: TargetPlan,
): Promise<{ image: LocalImage; blobs: BlobSource[] }> {
  const opened = await openImage(b.location);
  const base = await readBaseImage(opened.store, opened.target, target.platform).catch((err: unknown) => {
    if (!isPackfarmError(err)) throw err;
    throw new PackfarmError(err.code, `${b.name}: ${err.message}`, {
      cause: err,
      hint: err.hint ?? `the buildpackage must exist for ${target.name}`,
    });
  });
  return localImage('buildpackage', b.name, opened.store, base.digest);
}

function targetJob(
  plan: BuildPlan,
  target: TargetPlan,
  p: PreparedPlan,
  buildpacks: TargetJob['buildpacks'],
): TargetJob {
  const o = plan.options;
  const out = plan.outputLocation;
  const descriptor = o.descriptor ? relative(plan.appPath, resolve(plan.cwd, o.descriptor)) : undefined;
  return {
    platform: target.name,
    app: {
      digest: p.app.digest,
      size: p.app.size,
      index: { digest: p.appPieces.index.digest, size: p.appPieces.index.size },
    },
    buildpacks,
    ...(o.builder ? { builder: o.builder } : {}),
    // The run image planning chose for this target (a mirror on the output's registry first).
    runImage: target.runImage.name,
    ...(o.buildImage ? { buildImage: o.buildImage } : {}),
    executor: target.executor,
    ...(o.network ? { network: o.network } : {}),
    output:
      out.transport === 'docker'
        ? { kind: 'registry', image: o.image }
        : { kind: 'oci', key: `${hostname()}:${out.dir}` },
    untagged: plan.index,
    env: [...plan.userEnv].map(([k, v]) => `${k}=${v}`),
    insecureRegistries: plan.insecureRegistries,
    ...(plan.createdAt ? { creationTime: String(Math.floor(plan.createdAt.getTime() / 1000)) } : {}),
    ...(o.defaultProcess ? { defaultProcess: o.defaultProcess } : {}),
    ...(o.cacheImage ? { cacheImage: o.cacheImage } : {}),
    ...(o.previousImage ? { previousImage: o.previousImage } : {}),
    clearCache: o.clearCache,
    ...(descriptor ? { descriptor } : {}),
    platformApi: o.platformApi,
  };
}

/** oci output: the blobs a node sent back go into the layout, then the manifest (untagged). */
async function storeReceivedImage(
  store: ImageStore,
  received: BlobCache,
  digest: Digest,
  mediaType: string,
): Promise<void> {
  const manifestBytes = (await received.has(digest))
    ? await readFile(received.path(digest))
    : (await store.getManifest(digest)).bytes;
  const manifest = parseWith(
    ImageManifestSchema,
    parseJson(manifestBytes.toString('utf8'), `manifest ${digest}`),
    `manifest ${digest}`,
  );
  for (const d of [manifest.config, ...manifest.layers]) {
    if (await store.hasBlob(d.digest as Digest)) continue;
    if (!(await received.has(d.digest as Digest)))
      throw new PackfarmError(
        'BLOB_MISSING',
        `image ${digest}: blob ${d.digest} was neither sent back nor in ${store.description}`,
      );
    await store.putBlob({
      digest: d.digest as Digest,
      size: d.size,
      open: () => createReadStream(received.path(d.digest as Digest)),
    });
  }
  if (!(await store.resolve(digest))) await store.putManifest({ bytes: manifestBytes, mediaType });
}

function unionMachine(caps: readonly NodeCapacity[]): MachinePlatforms {
  const native: Platform[] = [];
  const emulated: Platform[] = [];
  const add = (list: Platform[], p: Platform) => {
    if (!list.some((x) => platformsEqual(x, p))) list.push(p);
  };
  for (const c of caps) {
    const usable = (p: Platform) => !c.restrict || c.restrict.some((r) => platformsEqual(r, p));
    for (const p of c.native) if (usable(p)) add(native, p);
  }
  for (const c of caps)
    for (const p of c.emulated)
      if (
        (!c.restrict || c.restrict.some((r) => platformsEqual(r, p))) &&
        !native.some((n) => platformsEqual(n, p))
      )
        add(emulated, p);
  return { native, emulated };
}

function noNodeLeft(
  p: PendingTarget,
  nodes: readonly FarmNode[],
  unreachable: readonly UnreachableNode[],
): PackfarmError {
  const lost = nodes.filter((n) => n.conn?.lost).map((n) => `${n.config.name} (${n.conn?.lost?.message})`);
  const excluded = [...p.exclude];
  return new PackfarmError(
    'NO_NODE_FOR_PLATFORM',
    `target ${p.target}: no node is left to build it` +
      (excluded.length ? `; it failed on ${excluded.join(', ')}` : '') +
      (lost.length ? `; lost: ${lost.join(', ')}` : '') +
      (unreachable.length ? `; unreachable: ${unreachable.map((u) => u.name).join(', ')}` : ''),
    { hint: 'check the nodes with `packfarm farm ls`' },
  );
}
