import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { constants as fsConstants } from 'node:fs';
import type { Stats } from 'node:fs';
import {
  access,
  chown,
  lstat,
  mkdir,
  open,
  readFile,
  readdir,
  readlink,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix, resolve } from 'node:path';
import { type Platform, formatPlatform } from '../oci/platform.js';
import { chownTree } from '../util/chown.js';
import { PackfarmError } from '../util/errors.js';
import { makeTempDir, onSweep } from '../util/tempdir.js';
import { type BinfmtState, detectPlatforms, elfRunnable, howToRun, readBinfmt } from './binfmt.js';
import type { ExecDirs, ExecResult, ExecSpec, Executor } from './executor.js';
import { DEFAULT_RUNTIME, findRuntime } from './runtime.js';
import { abortedBeforeStart, signalName, signalNumber, superviseChild } from './supervise.js';

/**
 * Run buildpack processes inside the build image's root filesystem through an OCI runtime (runc): one
 * `runc run` per process, with a runtime config packfarm writes (spec/exec.md). A foreign-architecture root
 * filesystem runs through the kernel's binfmt_misc qemu handlers (F flag), so only buildpack processes are
 * ever emulated; the lifecycle that calls `run` stays native.
 *
 * One container per process rather than one long-lived container with `runc exec`: `runc run` of a read-only
 * root measured ~20–40 ms here (bench/executor.mjs), well under the ~100 ms at which a kept container pays.
 */

/** Where the dirs are mounted: the paths the CNB spec and the reference lifecycle use. */
export const CONTAINER_PATHS: ExecDirs = {
  app: '/workspace',
  layers: '/layers',
  platform: '/platform',
  buildpacks: '/cnb/buildpacks',
  scratch: '/cnb/scratch',
};

export { DEFAULT_RUNTIME } from './runtime.js';

/** Kept in the bounding set only; a non-root build user gets no effective, permitted or ambient capability. */
const BOUNDING_CAPS = ['CAP_AUDIT_WRITE', 'CAP_KILL', 'CAP_NET_BIND_SERVICE'];

export interface OciExecutorOptions {
  /** The unpacked root filesystem (rootfs.ts `unpackRootfs(...).dir`); mounted read-only. */
  rootfs: string;
  /** Host dirs: app, layers (read-write), platform, buildpacks (read-only). Scratch is the executor's own. */
  dirs: Omit<ExecDirs, 'scratch'>;
  /** The build user (the image's CNB_USER_ID / CNB_GROUP_ID). */
  uid: number;
  gid: number;
  /** The build image's environment (rootfs.ts `config.env`); what phases start buildpack env from. */
  env: Record<string, string>;
  /** Share the host's network (and its /etc/resolv.conf and /etc/hosts). Default true; false = no network. */
  network?: boolean;
  /** The OCI runtime binary. Default: /usr/sbin/runc, else runc on PATH (runtime.ts findRuntime). */
  runtime?: string;
  /** The target platform: checked against what this machine can run (native, or binfmt_misc with F). */
  platform?: Platform;
  /** Parent of the executor's state (runtime state, bundles, scratch). Default: the OS temp dir. */
  stateParent?: string;
  /** Between SIGTERM and SIGKILL when a process is aborted or times out. Default 5 s. */
  killGraceMs?: number;
  hostname?: string;
  /** Extra host paths bound at `target` (--volume); read-only unless `readOnly` is false. */
  volumes?: readonly OciVolume[];
}

export interface OciVolume {
  host: string;
  target: string;
  readOnly: boolean;
}

/** Where a volume may not go: it would hide the lifecycle's own mounts (build-flags.ts refuses these too). */
const LIFECYCLE_ROOTS = ['/cnb', '/layers', '/workspace', '/platform'];

export interface OciExecutor extends Executor {
  readonly kind: 'oci';
  readonly paths: ExecDirs;
  readonly hostPaths: ExecDirs;
  readonly user: { uid: number; gid: number };
  readonly baseEnv: Readonly<Record<string, string>>;
  close(): Promise<void>;
}

/**
 * Check the runtime and privileges, hand the app and layers dirs to the build user (as the reference
 * lifecycle does before dropping privileges), and return the executor. Call `close()` when done.
 */
export async function createOciExecutor(opts: OciExecutorOptions): Promise<OciExecutor> {
  const runtime = opts.runtime ?? (await findRuntime()) ?? DEFAULT_RUNTIME;
  await checkRuntime(runtime);
  const rootfs = resolve(opts.rootfs);
  const st = await stat(rootfs).catch(() => undefined);
  if (!st?.isDirectory())
    throw new PackfarmError('ROOTFS_MISSING', `root filesystem ${rootfs} does not exist`, {
      hint: 'unpack the build image first (prepareBuildImageRootfs in phase/build-image.ts)',
    });
  if (opts.platform) await checkRunnable(opts.platform);
  for (const [name, dir] of Object.entries(opts.dirs)) {
    const d = await stat(dir).catch(() => undefined);
    if (!d?.isDirectory())
      throw new PackfarmError('EXEC_DIR_MISSING', `the ${name} dir ${dir} does not exist`, {
        hint: 'create it before starting the executor',
      });
  }

  const volumes = await checkVolumes(opts.volumes ?? []);

  // Named after this process, so that when it is killed the next packfarm stops its containers and removes
  // the dir (sweepDeadOciState below).
  const state = await makeTempDir(opts.stateParent ?? tmpdir(), 'oci');
  const runtimeRoot = join(state, 'runc');
  const bundles = join(state, 'bundles');
  const scratch = join(state, 'scratch');
  await writeFile(join(state, RUNTIME_FILE), runtime);
  await mkdir(runtimeRoot, { mode: 0o700 });
  await mkdir(bundles, { mode: 0o700 });
  await mkdir(scratch, { mode: 0o755 });

  const hostPaths: ExecDirs = {
    app: resolve(opts.dirs.app),
    layers: resolve(opts.dirs.layers),
    platform: resolve(opts.dirs.platform),
    buildpacks: resolve(opts.dirs.buildpacks),
    scratch,
  };
  try {
    const user = { uid: opts.uid, gid: opts.gid };
    await chownTree(hostPaths.app, user, { keepOwned: true });
    await chownTree(hostPaths.layers, user, { keepOwned: true });
    await chown(scratch, opts.uid, opts.gid);
  } catch (err) {
    await rm(state, { recursive: true, force: true });
    throw err;
  }

  const ctx: RunContext = {
    runtime,
    runtimeRoot,
    bundles,
    rootfs,
    hostPaths,
    uid: opts.uid,
    gid: opts.gid,
    network: opts.network !== false,
    hostname: opts.hostname ?? 'packfarm',
    volumes,
    killGraceMs: opts.killGraceMs ?? 5000,
    nofile: await hostNofileLimit(),
    machine: await machineOf(),
    active: new Set(),
  };
  let closed = false;
  return {
    kind: 'oci',
    paths: { ...CONTAINER_PATHS },
    hostPaths,
    user: { uid: opts.uid, gid: opts.gid },
    baseEnv: { ...opts.env },
    run: (spec) =>
      closed ? Promise.reject(new Error('the oci executor is closed')) : runInContainer(ctx, spec),
    async close() {
      if (closed) return;
      closed = true;
      await Promise.all(
        [...ctx.active].map((id) => runtimeCmd(ctx, ['kill', '--all', id, 'KILL']).catch(() => {})),
      );
      await Promise.all(
        [...ctx.active].map((id) => runtimeCmd(ctx, ['delete', '--force', id]).catch(() => {})),
      );
      await rm(state, { recursive: true, force: true });
    },
  };
}

/** Which runtime a state dir's containers run under, for whoever sweeps it after a kill. */
const RUNTIME_FILE = 'runtime';

/**
 * A killed packfarm's state dir: its containers may still run (`runc run` outlives its parent), writing into
 * a build dir the next build reuses. Force-delete each (which kills it) before the dir is removed.
 */
export async function sweepDeadOciState(state: string): Promise<void> {
  // The parent (/tmp) is shared: run only what a dir and file of our own user, writable by nobody else, name.
  const ours = (st: Stats | undefined) =>
    st !== undefined && st.uid === process.getuid?.() && (st.mode & 0o022) === 0;
  const dir = await lstat(state).catch(() => undefined);
  if (!dir?.isDirectory() || !ours(dir)) return;
  const file = join(state, RUNTIME_FILE);
  const fst = await lstat(file).catch(() => undefined);
  const runtime = fst?.isFile() && ours(fst) ? (await readFile(file, 'utf8')).trim() : DEFAULT_RUNTIME;
  const root = join(state, 'runc');
  const ids = await readdir(root).catch(() => [] as string[]);
  for (const id of ids) {
    await new Promise<void>((done) => {
      const p = spawn(runtime, ['--root', root, 'delete', '--force', id], { stdio: 'ignore', env: {} });
      p.on('error', () => done());
      p.on('close', () => done());
    });
  }
}
onSweep('oci', sweepDeadOciState);

interface RunContext {
  runtime: string;
  runtimeRoot: string;
  bundles: string;
  rootfs: string;
  hostPaths: ExecDirs;
  uid: number;
  gid: number;
  network: boolean;
  hostname: string;
  volumes: readonly OciVolume[];
  killGraceMs: number;
  nofile: number;
  /** What this machine runs, for telling a foreign binary without an emulator before starting it. */
  machine: { native: Platform[]; binfmt: BinfmtState } | undefined;
  /** Containers started and not yet deleted. */
  active: Set<string>;
}

let counter = 0;

async function runInContainer(ctx: RunContext, spec: ExecSpec): Promise<ExecResult> {
  if (spec.argv.length === 0) throw new Error('ExecSpec.argv must not be empty');
  const early = abortedBeforeStart(spec);
  if (early) return early;
  await checkInside(ctx, spec);

  const id = `packfarm-${process.pid}-${++counter}-${randomBytes(4).toString('hex')}`;
  const bundle = join(ctx.bundles, id);
  await mkdir(bundle, { mode: 0o700 });
  const logPath = join(bundle, 'runtime.log');
  await writeFile(join(bundle, 'config.json'), JSON.stringify(runtimeConfig(ctx, spec)));

  const child = spawn(
    ctx.runtime,
    ['--root', ctx.runtimeRoot, '--log', logPath, '--log-format', 'json', 'run', '--bundle', bundle, id],
    { stdio: [spec.stdin === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'], env: {}, windowsHide: true },
  );
  ctx.active.add(id);

  let sent: 'SIGTERM' | 'SIGKILL' | undefined;
  const supervised = superviseChild(child, spec, {
    killGraceMs: ctx.killGraceMs,
    // Through the runtime, to every process of the container: the process is PID 1 there, and PID 1 ignores
    // a SIGTERM it has no handler for, but its children do not; SIGKILL from outside always ends it.
    kill: (signal) => {
      sent = signal;
      runtimeCmd(ctx, ['kill', '--all', id, signal === 'SIGTERM' ? 'TERM' : 'KILL']).catch(() =>
        child.kill(signal),
      );
    },
  });

  try {
    const { code, signal } = await supervised.exited.catch((e: NodeJS.ErrnoException) => {
      throw new PackfarmError('RUNC_FAILED', `cannot start ${ctx.runtime}: ${e.message}`, { cause: e });
    });
    const failure = await startFailure(logPath);
    if (failure) throw startError(failure, spec, ctx);
    // The runtime exits with the process' status, 128 + n when a signal ended it.
    const exitCode = code ?? (signal ? 128 + signalNumber(signal) : 1);
    const result: ExecResult = { exitCode };
    const sig = exitCode > 128 ? signalName(exitCode - 128) : undefined;
    if (sig && (sent || sig === 'SIGKILL' || sig === 'SIGSEGV' || sig === 'SIGABRT')) result.signal = sig;
    return supervised.finish(result);
  } finally {
    supervised.dispose();
    // `run` deletes its container on exit; a forced delete covers a runtime that died first.
    await runtimeCmd(ctx, ['delete', '--force', id]).catch(() => {});
    ctx.active.delete(id);
    await rm(bundle, { recursive: true, force: true });
  }
}

/** The OCI runtime config of one process (runtime-spec 1.0). */
export function runtimeConfig(
  ctx: Pick<RunContext, 'rootfs' | 'hostPaths' | 'uid' | 'gid' | 'network' | 'hostname' | 'nofile'> & {
    volumes?: readonly OciVolume[];
  },
  spec: Pick<ExecSpec, 'argv' | 'cwd' | 'env'>,
): Record<string, unknown> {
  const bind = (source: string, destination: string, ro: boolean) => ({
    destination,
    type: 'bind',
    source,
    options: ['rbind', 'nosuid', 'nodev', ro ? 'ro' : 'rw'],
  });
  const h = ctx.hostPaths;
  const c = CONTAINER_PATHS;
  const mounts: unknown[] = [
    { destination: '/proc', type: 'proc', source: 'proc' },
    {
      destination: '/dev',
      type: 'tmpfs',
      source: 'tmpfs',
      options: ['nosuid', 'strictatime', 'mode=755', 'size=65536k'],
    },
    {
      destination: '/dev/pts',
      type: 'devpts',
      source: 'devpts',
      options: ['nosuid', 'noexec', 'newinstance', 'ptmxmode=0666', 'mode=0620', 'gid=5'],
    },
    {
      destination: '/dev/shm',
      type: 'tmpfs',
      source: 'shm',
      options: ['nosuid', 'noexec', 'nodev', 'mode=1777', 'size=65536k'],
    },
    { destination: '/dev/mqueue', type: 'mqueue', source: 'mqueue', options: ['nosuid', 'noexec', 'nodev'] },
    // sysfs needs its own network namespace; with the host's network the host's /sys is bound read-only.
    ctx.network
      ? {
          destination: '/sys',
          type: 'bind',
          source: '/sys',
          options: ['rbind', 'nosuid', 'noexec', 'nodev', 'ro'],
        }
      : { destination: '/sys', type: 'sysfs', source: 'sysfs', options: ['nosuid', 'noexec', 'nodev', 'ro'] },
    { destination: '/tmp', type: 'tmpfs', source: 'tmpfs', options: ['nosuid', 'nodev', 'mode=1777'] },
    bind(h.app, c.app, false),
    bind(h.layers, c.layers, false),
    bind(h.platform, c.platform, true),
    bind(h.buildpacks, c.buildpacks, true),
    bind(h.scratch, c.scratch, false),
    // After the lifecycle's dirs, in the order given: a later volume may sit inside an earlier one, as with
    // pack. runc makes a missing TARGET (an empty dir or file) in the unpacked build image before mounting.
    ...(ctx.volumes ?? []).map((v) => bind(v.host, v.target, v.readOnly)),
  ];
  if (ctx.network) {
    mounts.push(bind('/etc/resolv.conf', '/etc/resolv.conf', true), bind('/etc/hosts', '/etc/hosts', true));
  }
  const namespaces = [{ type: 'pid' }, { type: 'ipc' }, { type: 'uts' }, { type: 'mount' }];
  if (!ctx.network) namespaces.push({ type: 'network' });
  return {
    ociVersion: '1.0.2',
    process: {
      terminal: false,
      user: { uid: ctx.uid, gid: ctx.gid, additionalGids: [ctx.gid] },
      args: spec.argv,
      env: Object.entries(spec.env).map(([k, v]) => `${k}=${v}`),
      cwd: spec.cwd,
      capabilities: { bounding: BOUNDING_CAPS, effective: [], permitted: [], inheritable: [], ambient: [] },
      rlimits: [{ type: 'RLIMIT_NOFILE', hard: ctx.nofile, soft: ctx.nofile }],
      noNewPrivileges: true,
    },
    root: { path: ctx.rootfs, readonly: true },
    hostname: ctx.hostname,
    mounts,
    linux: {
      resources: { devices: [{ allow: false, access: 'rwm' }] },
      namespaces,
      maskedPaths: [
        '/proc/acpi',
        '/proc/asound',
        '/proc/kcore',
        '/proc/keys',
        '/proc/latency_stats',
        '/proc/timer_list',
        '/proc/timer_stats',
        '/proc/sched_debug',
        '/sys/firmware',
        '/proc/scsi',
      ],
      readonlyPaths: ['/proc/bus', '/proc/fs', '/proc/irq', '/proc/sys', '/proc/sysrq-trigger'],
    },
  };
}

/**
 * Before starting a container: the executable, its `#!` interpreter and the working dir must exist as the
 * process will see them, and a binary must be of an architecture this machine runs. runc reports a failed
 * execve only as text on the process' stderr (exit status 1), so these are checked here, to give the same
 * clear errors as the host executor.
 */
async function checkInside(ctx: RunContext, spec: ExecSpec): Promise<void> {
  const exe = spec.argv[0]!;
  const fail = (why: string, hint?: string) =>
    new PackfarmError('EXEC_FAILED', `cannot run ${exe}: ${why}`, hint ? { hint } : {});
  if (!exe.startsWith('/')) throw fail('the oci executor needs an absolute path');
  const cwd = await resolveInside(ctx, spec.cwd);
  if (!cwd?.st.isDirectory()) throw fail(`working directory ${spec.cwd} does not exist`);
  const file = await resolveInside(ctx, exe);
  if (!file) throw fail('no such file');
  if (!file.st.isFile() || (Number(file.st.mode) & 0o111) === 0)
    throw fail('permission denied (is it executable?)', `chmod +x ${file.host}`);
  let head = await readHead(file.host);
  if (head.subarray(0, 2).toString('latin1') === '#!') {
    const interpreter = head.subarray(2).toString('latin1').split('\n')[0]?.trim().split(/\s+/)[0] ?? '';
    const resolved = interpreter.startsWith('/') ? await resolveInside(ctx, interpreter) : undefined;
    if (!resolved?.st.isFile())
      throw fail(
        `its interpreter (#! line) ${interpreter} was not found in the build image`,
        'check the first line of the script against the build image',
      );
    head = await readHead(resolved.host);
  }
  const elf = ctx.machine ? elfRunnable(head, ctx.machine.native, ctx.machine.binfmt) : undefined;
  if (elf && !elf.runnable)
    throw fail(
      `exec format error: it is ${elf.describe}, which this machine neither runs nor emulates (no binfmt_misc handler with the F flag)`,
      'register the emulators as root: packfarm node setup-emulation',
    );
}

/**
 * Follow a path as the container will see it: each symlink resolved inside the root filesystem (an absolute
 * `/bin` → `/usr/bin` stays in the image), the mounted dirs mapped to their host dirs. Undefined if missing.
 */
async function resolveInside(
  ctx: Pick<RunContext, 'rootfs' | 'hostPaths'>,
  path: string,
): Promise<{ host: string; st: Stats } | undefined> {
  let parts = path.split('/').filter(Boolean);
  let cur = '/';
  let hops = 0;
  for (let i = 0; i < parts.length; ) {
    const next = posix.join(cur, parts[i]!);
    const host = hostOfInside(ctx, next);
    const st = await lstat(host).catch(() => undefined);
    if (!st) return undefined;
    if (st.isSymbolicLink()) {
      if (++hops > 40) return undefined;
      const target = await readlink(host);
      const base = target.startsWith('/') ? target : posix.join(cur, target);
      parts = [...base.split('/').filter(Boolean), ...parts.slice(i + 1)];
      cur = '/';
      i = 0;
      continue;
    }
    cur = next;
    i++;
  }
  const host = hostOfInside(ctx, cur);
  const st = await lstat(host).catch(() => undefined);
  return st ? { host, st } : undefined;
}

function hostOfInside(ctx: Pick<RunContext, 'rootfs' | 'hostPaths'>, p: string): string {
  for (const k of Object.keys(CONTAINER_PATHS) as Array<keyof ExecDirs>) {
    const inside = CONTAINER_PATHS[k];
    if (p === inside || p.startsWith(`${inside}/`)) return ctx.hostPaths[k] + p.slice(inside.length);
  }
  return join(ctx.rootfs, p);
}

/** The first bytes of a file (enough for a #! line and an ELF header). */
async function readHead(path: string): Promise<Buffer> {
  const fh = await open(path, 'r').catch(() => undefined);
  if (!fh) return Buffer.alloc(0);
  try {
    const buf = Buffer.alloc(256);
    const { bytesRead } = await fh.read(buf, 0, buf.length, 0);
    return buf.subarray(0, bytesRead);
  } finally {
    await fh.close();
  }
}

/** The runtime's own error when it could not start the process (read from its JSON log). */
async function startFailure(logPath: string): Promise<string | undefined> {
  const text = await readFile(logPath, 'utf8').catch(() => '');
  for (const line of text.split('\n')) {
    if (!line.trim()) continue;
    try {
      const entry = JSON.parse(line) as { level?: string; msg?: string };
      if (entry.level === 'error' && entry.msg) return entry.msg;
    } catch {
      // a line that is not JSON is not an error report
    }
  }
  return undefined;
}

function startError(message: string, spec: ExecSpec, ctx: RunContext): PackfarmError {
  const exe = spec.argv[0]!;
  if (/exec format error/.test(message)) {
    return new PackfarmError(
      'EXEC_FAILED',
      `cannot run ${exe}: exec format error (a binary of another architecture, and no binfmt_misc handler with the F flag for it)`,
      { hint: 'register the emulators as root: packfarm node setup-emulation' },
    );
  }
  if (/no such file or directory/.test(message) && /exec:/.test(message)) {
    return new PackfarmError(
      'EXEC_FAILED',
      `cannot run ${exe}: its interpreter (#! line) or a library it needs was not found in the build image`,
      { hint: 'check the first line of the script against the build image' },
    );
  }
  if (/permission denied/.test(message)) {
    return new PackfarmError('EXEC_FAILED', `cannot run ${exe}: permission denied (${message})`, {
      hint: `the build user ${ctx.uid}:${ctx.gid} must be able to read and execute it`,
    });
  }
  return new PackfarmError('RUNC_FAILED', `${ctx.runtime} could not start ${exe}: ${message}`, {
    hint: 'see spec/exec.md for what the oci executor needs (root, cgroups, a runc that works here)',
  });
}

/** Each volume's host path must exist, and its target must stay clear of the lifecycle's dirs. */
async function checkVolumes(volumes: readonly OciVolume[]): Promise<OciVolume[]> {
  const out: OciVolume[] = [];
  for (const v of volumes) {
    const target = posix.normalize(v.target).replace(/\/+$/, '') || '/';
    const clash = LIFECYCLE_ROOTS.find((r) => target === r || target.startsWith(`${r}/`));
    if (!target.startsWith('/') || target === '/' || clash)
      throw new PackfarmError(
        'INVALID_ARGS',
        `--volume ${v.host}:${v.target}: the target must be an absolute path outside /, /cnb, /layers, /workspace and /platform`,
        { hint: 'mount it elsewhere, e.g. --volume ./certs:/etc/certs:ro' },
      );
    const host = resolve(v.host);
    const st = await stat(host).catch(() => undefined);
    if (!st)
      throw new PackfarmError('EXEC_DIR_MISSING', `--volume ${v.host}:${v.target}: ${host} does not exist`, {
        hint: 'create the host path first, or correct it',
      });
    out.push({ host, target, readOnly: v.readOnly });
  }
  return out;
}

async function checkRuntime(runtime: string): Promise<void> {
  try {
    await access(runtime, fsConstants.X_OK);
  } catch {
    throw new PackfarmError(
      'RUNC_MISSING',
      `the OCI runtime ${runtime} is not installed (or not executable)`,
      {
        hint: 'install it (apt-get install runc), or build on the host executor with --executor host inside an already isolated environment',
      },
    );
  }
  if (process.getuid?.() !== 0) {
    throw new PackfarmError(
      'OCI_NEEDS_ROOT',
      'the oci executor runs runc as root: mounts, cgroups and switching to the build user need it',
      {
        hint: 'run packfarm as root (sudo), or use --executor host inside an already isolated build container; rootless use is described in spec/exec.md',
      },
    );
  }
}

async function machineOf(): Promise<RunContext['machine']> {
  const [m, binfmt] = await Promise.all([detectPlatforms(), readBinfmt()]);
  return { native: m.native, binfmt };
}

async function checkRunnable(platform: Platform): Promise<void> {
  const machine = await detectPlatforms();
  if (howToRun(machine, platform)) return;
  const emulated = machine.emulated.find((e) => e.platform.architecture === platform.architecture);
  throw new PackfarmError(
    'PLATFORM_NOT_RUNNABLE',
    emulated && !emulated.fixBinary
      ? `this machine cannot run ${formatPlatform(platform)} in a container: binfmt_misc handler ${emulated.handler} lacks the F flag`
      : `this machine cannot run ${formatPlatform(platform)}: it is not native here and no binfmt_misc handler emulates it`,
    { hint: 'register the qemu-user-static handlers as root: packfarm node setup-emulation' },
  );
}

function runtimeCmd(ctx: Pick<RunContext, 'runtime' | 'runtimeRoot'>, args: string[]): Promise<void> {
  return new Promise((res, rej) => {
    const p = spawn(ctx.runtime, ['--root', ctx.runtimeRoot, ...args], { stdio: 'ignore', env: {} });
    p.once('error', rej);
    p.once('close', (code) =>
      code === 0 ? res() : rej(new Error(`${ctx.runtime} ${args[0]} exited ${code}`)),
    );
  });
}

/** The caller's own open-files limit, so builds get what packfarm itself may use (runc's default is 1024). */
async function hostNofileLimit(): Promise<number> {
  const text = await readFile('/proc/self/limits', 'utf8').catch(() => '');
  const m = /^Max open files\s+(\d+|unlimited)\s+(\d+|unlimited)/m.exec(text);
  const hard = m?.[2] === 'unlimited' ? 1048576 : Number(m?.[2] ?? 1024);
  return Math.min(hard, 1048576);
}
