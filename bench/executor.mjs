// Executor start-up: the median cost of one bin/detect (`exit 100`) started through the host executor and
// through the oci executor (runc run in a busybox build image: native amd64, and arm64 through qemu binfmt),
// plus `runc exec` into one kept container, the alternative design, measured in the same run.
// Needs root, runc, busybox-static and (for arm64) the qemu handlers: `packfarm node setup-emulation`.
// Run after `npm run build`:  node bench/executor.mjs [runs]
import { execFile, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readdir, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { load, median, scratch } from './lib.mjs';

const RUNS = Number(process.argv[2] ?? 50);
const execFileP = promisify(execFile);

const { runDetect } = await load('buildpack/detect.js');
const { parseBuildpackDescriptor } = await load('buildpack/descriptor.js');
const { createHostExecutor } = await load('exec/host.js');
const { createOciExecutor, runtimeConfig } = await load('exec/oci.js');
const { prepareBuildImageRootfs } = await load('phase/build-image.js');
const { detectPlatforms, howToRun } = await load('exec/binfmt.js');
const { writeBusyboxRunImage } = await load('builder/busybox-run-image.js');
const { openLayoutStore } = await load('image/layout-store.js');

if (process.getuid?.() !== 0) {
  console.error('the oci executor needs root: run this benchmark as root');
  process.exit(2);
}

const { work: root, onExit } = scratch('executor');
const buildpacks = join(root, 'buildpacks');
const bpDir = join(buildpacks, 'bench_detect', '1.0.0');
await mkdir(join(bpDir, 'bin'), { recursive: true });
const toml = 'api = "0.12"\n[buildpack]\nid = "bench/detect"\nversion = "1.0.0"\n';
await writeFile(join(bpDir, 'buildpack.toml'), toml);
await writeFile(join(bpDir, 'bin', 'detect'), '#!/bin/sh\nexit 100\n');
await chmod(join(bpDir, 'bin', 'detect'), 0o755);
const descriptor = parseBuildpackDescriptor(toml, { source: join(bpDir, 'buildpack.toml'), dir: bpDir });

/** Median wall time of RUNS sequential bin/detects through `executor` (after 3 warm-up runs). */
async function perProcess(executor, dirs) {
  const once = async () => {
    const t0 = performance.now();
    const o = await runDetect({
      executor,
      descriptor,
      appDir: dirs.app,
      platformDir: dirs.platform,
      scratchDir: dirs.scratch,
      hostEnv: { PATH: '/usr/local/bin:/usr/bin:/bin' },
      userEnv: [],
      buildConfigEnv: [],
      targetEnv: {},
      execEnv: '',
    });
    if (o.code !== 100)
      throw new Error(`bin/detect: expected exit 100, got ${o.code} ${o.error ?? o.output}`);
    return performance.now() - t0;
  };
  for (let i = 0; i < 3; i++) await once();
  const times = [];
  for (let i = 0; i < RUNS; i++) times.push(await once());
  return median(times);
}

async function workspace(name) {
  const dirs = {
    app: join(root, name, 'app'),
    platform: join(root, name, 'platform'),
    layers: join(root, name, 'layers'),
  };
  for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });
  return dirs;
}

/** A statically linked busybox for `arch`: the host's for amd64, else Debian's busybox-static for that arch. */
async function busyboxFor(arch) {
  if (arch === 'amd64' && process.arch === 'x64') return '/bin/busybox';
  const deb = { arm64: 'arm64', ppc64le: 'ppc64el', s390x: 's390x' }[arch];
  // The same cache the tests use (test/helpers/debian-packages.ts).
  const cached = join(tmpdir(), 'packfarm-debian-packages', deb, 'busybox-static', 'root', 'bin', 'busybox');
  if (existsSync(cached)) return cached;
  const apt = join(root, `apt-${deb}`);
  for (const d of ['lists/partial', 'cache/archives/partial', 'debs'])
    await mkdir(join(apt, d), { recursive: true });
  await writeFile(join(apt, 'status'), '');
  const o = [
    '-q',
    ...['APT::Architecture', 'APT::Architectures'].flatMap((k) => ['-o', `${k}=${deb}`]),
    ...['-o', `Dir::State::Lists=${join(apt, 'lists')}`, '-o', `Dir::State::Status=${join(apt, 'status')}`],
    ...[
      '-o',
      `Dir::Cache=${join(apt, 'cache')}`,
      '-o',
      'Debug::NoLocking=1',
      '-o',
      'APT::Sandbox::User=root',
    ],
  ];
  await execFileP('apt-get', [...o, 'update'], { maxBuffer: 16 << 20 });
  await execFileP('apt-get', [...o, 'download', 'busybox-static'], { cwd: join(apt, 'debs') });
  const deb0 = (await readdir(join(apt, 'debs')))[0];
  await execFileP('dpkg-deb', ['-x', join(apt, 'debs', deb0), join(apt, 'root')]);
  return join(apt, 'root', 'bin', 'busybox');
}

async function ociExecutor(arch) {
  const platform = { os: 'linux', architecture: arch };
  const store = await openLayoutStore(join(root, `layout-${arch}`), { create: true });
  const img = await writeBusyboxRunImage({
    store,
    tag: 'build',
    platform,
    busyboxPath: await busyboxFor(arch),
    env: ['CNB_USER_ID=1000', 'CNB_GROUP_ID=1000'],
  });
  const rootfs = await prepareBuildImageRootfs({ store, image: img.digest, dataDir: join(root, 'data') });
  const ws = await workspace(`oci-${arch}`);
  const exec = await createOciExecutor({
    rootfs: rootfs.dir,
    dirs: { app: ws.app, layers: ws.layers, platform: ws.platform, buildpacks },
    uid: rootfs.config.uid,
    gid: rootfs.config.gid,
    env: rootfs.config.env,
    platform,
  });
  return { exec, ws: { ...ws, scratch: join(exec.hostPaths.scratch) }, rootfs };
}

/** The alternative: one container kept alive (`sleep`), each bin/detect started with `runc exec`. */
async function keptContainer(exec, rootfs) {
  const state = join(root, 'kept-state');
  const bundle = join(root, 'kept-bundle');
  await mkdir(bundle, { recursive: true });
  const cfg = runtimeConfig(
    {
      rootfs: rootfs.dir,
      hostPaths: exec.hostPaths,
      uid: 1000,
      gid: 1000,
      network: true,
      hostname: 'bench',
      nofile: 1024,
    },
    { argv: ['/bin/sleep', '3600'], cwd: '/workspace', env: { PATH: '/bin' } },
  );
  await writeFile(join(bundle, 'config.json'), JSON.stringify(cfg));
  const id = `packfarm-bench-${process.pid}`;
  // The container's init keeps runc create's stdio: with pipes, waiting for them would never end.
  await new Promise((res, rej) => {
    const p = spawn('runc', ['--root', state, 'create', '--bundle', bundle, id], { stdio: 'ignore' });
    p.on('error', rej);
    p.on('close', (code) => (code === 0 ? res() : rej(new Error(`runc create: exit ${code}`))));
  });
  onExit(() => spawnSync('runc', ['--root', state, 'delete', '--force', id], { stdio: 'ignore' }));
  await execFileP('runc', ['--root', state, 'start', id]);
  const run = () =>
    new Promise((res, rej) => {
      const p = spawn(
        'runc',
        [
          '--root',
          state,
          'exec',
          '--user',
          '1000:1000',
          '--cwd',
          '/workspace',
          id,
          '/cnb/buildpacks/bench_detect/1.0.0/bin/detect',
        ],
        { stdio: 'ignore' },
      );
      p.on('error', rej);
      p.on('close', (code) => (code === 100 ? res() : rej(new Error(`runc exec: exit ${code}`))));
    });
  for (let i = 0; i < 3; i++) await run();
  const times = [];
  for (let i = 0; i < RUNS; i++) {
    const t0 = performance.now();
    await run();
    times.push(performance.now() - t0);
  }
  await execFileP('runc', ['--root', state, 'delete', '--force', id]);
  return median(times);
}

const hostWs = await workspace('host');
await mkdir(join(root, 'host-scratch'), { recursive: true });
const host = await perProcess(createHostExecutor(), { ...hostWs, scratch: join(root, 'host-scratch') });

const amd64 = await ociExecutor('amd64');
const ociAmd64 = await perProcess(amd64.exec, amd64.ws);
const kept = await keptContainer(amd64.exec, amd64.rootfs);
await amd64.exec.close();

const machine = await detectPlatforms();
let ociArm64;
if (howToRun(machine, { os: 'linux', architecture: 'arm64' })) {
  const arm64 = await ociExecutor('arm64');
  ociArm64 = await perProcess(arm64.exec, arm64.ws);
  await arm64.exec.close();
}

const ms = (x) => `${x.toFixed(1)} ms`;
console.log(`executor start-up: median of ${RUNS} bin/detect (exit 100) per executor`);
console.log(`  host (child process)              ${ms(host)}`);
console.log(`  oci, linux/amd64 (runc run)        ${ms(ociAmd64)}   ${(ociAmd64 / host).toFixed(1)}x host`);
console.log(`  oci, linux/amd64 (runc exec, kept) ${ms(kept)}   ${(kept / host).toFixed(1)}x host`);
if (ociArm64 !== undefined)
  console.log(`  oci, linux/arm64 (qemu, runc run)  ${ms(ociArm64)}   ${(ociArm64 / host).toFixed(1)}x host`);
else console.log('  oci, linux/arm64: not measured (no qemu handler; run packfarm node setup-emulation)');
console.log(
  `  runc run ${ociAmd64 - host > 100 ? 'costs more' : 'costs less'} than 100 ms over host per process: ${
    ociAmd64 - host > 100 ? 'a kept container would pay' : 'one container per process is kept'
  }`,
);
