// Farm benchmark. Not a test.
//
// 1. A two-target build (linux/amd64 + linux/386, host executor) on a farm of two SSH nodes — each an sshd on
//    127.0.0.x running this checkout's dist/ (node1 restricted to 386, node2 to amd64) — against the same
//    targets on the local node alone, in the same run (medians of BENCH_RUNS, fresh images each time).
//    Both "nodes" are this machine, so the figure is the farm's own cost (ssh, blobs by digest, a job
//    process per target, planning twice), not a speed-up from more hardware.
// 2. Bytes moved per target on a farm rebuild after one app file changes: what went to each node and back,
//    blobs sent, and what reached the registry.
// 3. What exists only on the coordinator (protocol 3): a run image in an OCI layout and a --cache-dir. Bytes
//    per target on the first farm build (run image child + cache layers go out, the new cache comes back) and
//    on a rebuild after one app file changes (only the app and the changed cache layer should move).
//   node bench/farm.mjs            BENCH_RUNS=3; BENCH_SCALE=1 is an app of ~20 MB in ~2000 files
import { execFileSync, spawn } from 'node:child_process';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer, connect } from 'node:net';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmtMB, fmtS, load, makeTree, median, setup, startCountingRegistry } from './lib.mjs';

const { scale, runs, work, onExit } = setup('farm', { runs: 3 });
const { buildOnFarm } = await load('farm/build.js');
const { writeBusyboxRunImage } = await load('builder/busybox-run-image.js');
const { publishIndex } = await load('image/publish-index.js');
const { createRegistryStore } = await load('image/registry-store.js');
const { parseReference } = await load('oci/reference.js');
const { closeSharedRegistryClients } = await load('registry/index.js');
const { openLayoutStore } = await load('image/layout-store.js');

const repo = resolve(fileURLToPath(import.meta.url), '..', '..');
process.env.PACKFARM_HOME = join(work, 'coordinator');

// --- two SSH nodes -------------------------------------------------------------------------------------
const sshd = '/usr/sbin/sshd';
mkdirSync('/run/sshd', { recursive: true });
const userKey = join(work, 'user_key');
execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', userKey]);
const freePort = (host) =>
  new Promise((res) => {
    const s = createServer().listen(0, host, () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
const listening = async (host, port) => {
  for (let i = 0; i < 200; i++) {
    const ok = await new Promise((res) => {
      const c = connect(port, host);
      c.once('connect', () => {
        c.destroy();
        res(true);
      });
      c.once('error', () => res(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd on ${host}:${port} did not start`);
};
const known = [];
const nodes = [];
for (const [i, platform] of [
  [1, 'linux/386'],
  [2, 'linux/amd64'],
]) {
  const host = `127.0.0.${10 + i}`;
  const dir = join(work, `node${i}`);
  mkdirSync(dir, { recursive: true });
  execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', join(dir, 'host_key')]);
  writeFileSync(join(dir, 'authorized_keys'), readFileSync(`${userKey}.pub`));
  const port = await freePort(host);
  writeFileSync(
    join(dir, 'sshd_config'),
    [
      `ListenAddress ${host}:${port}`,
      `HostKey ${join(dir, 'host_key')}`,
      `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
      `PidFile ${join(dir, 'sshd.pid')}`,
      'UsePAM no',
      'StrictModes no',
      'PermitRootLogin prohibit-password',
      'PasswordAuthentication no',
      'LogLevel ERROR',
      '',
    ].join('\n'),
  );
  const proc = spawn(sshd, ['-D', '-e', '-f', join(dir, 'sshd_config')], { stdio: 'ignore' });
  onExit(() => proc.kill('SIGTERM'));
  await listening(host, port);
  known.push(`[${host}]:${port} ${readFileSync(join(dir, 'host_key.pub'), 'utf8').trim()}`);
  nodes.push({
    name: `node${i}`,
    uri: `ssh://root@${host}:${port}`,
    identity: userKey,
    platforms: [platform],
    command: `env PACKFARM_HOME=${join(dir, 'data')} ${process.execPath} ${join(repo, 'bin', 'packfarm.js')}`,
    ssh_options: [`UserKnownHostsFile=${join(work, 'known_hosts')}`, 'GlobalKnownHostsFile=/dev/null'],
  });
}
writeFileSync(join(work, 'known_hosts'), `${known.join('\n')}\n`);

// --- registry, run image index, buildpack, app ----------------------------------------------------------
const registry = await startCountingRegistry(work);
onExit(() => registry.stop());
const store = (r) =>
  createRegistryStore(parseReference(`${registry.host}/${r}`), { insecureRegistries: [registry.host] });
const runImages = [];
for (const architecture of ['amd64', '386'])
  runImages.push(
    await writeBusyboxRunImage({
      store: store('run'),
      tag: `1-${architecture}`,
      platform: { os: 'linux', architecture },
      busyboxPath: '/bin/busybox',
      createdBy: 'bench',
    }),
  );
await publishIndex({ store: store('run'), images: runImages.map((i) => i.digest), tags: ['1'] });

const bp = join(work, 'buildpack');
mkdirSync(join(bp, 'bin'), { recursive: true });
writeFileSync(
  join(bp, 'buildpack.toml'),
  'api = "0.12"\n[buildpack]\nid = "bench/copy"\nversion = "1.0.0"\n',
);
writeFileSync(join(bp, 'bin', 'detect'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
const loops = Math.round(40_000 * scale);
writeFileSync(
  join(bp, 'bin', 'build'),
  [
    '#!/bin/sh',
    'set -eu',
    `i=0; while [ $i -lt ${loops} ]; do i=$((i+1)); done`,
    'L="$CNB_LAYERS_DIR/app-copy"; mkdir -p "$L"',
    'cp -r src "$L/src"',
    'printf "[types]\\nlaunch = true\\n" > "$L.toml"',
    '',
  ].join('\n'),
  { mode: 0o755 },
);
const app = join(work, 'app');
const bytes = makeTree(join(app, 'src'), 0.1 * scale, { largeBytes: Math.round(4 * 1024 * 1024 * scale) });

let n = 0;
const once = async (farmNodes) => {
  const image = `${registry.host}/app-${n++}:latest`;
  const t0 = performance.now();
  const report = await buildOnFarm(
    {
      image,
      path: app,
      buildpacks: [bp],
      runImage: `${registry.host}/run:1`,
      insecureRegistries: [registry.host],
      publish: true,
      platforms: ['linux/amd64,linux/386'],
    },
    { nodes: farmNodes },
  );
  return { ms: performance.now() - t0, report, image };
};

console.log(
  `app: ${fmtMB(bytes)} in ${join(app, 'src')}; targets linux/amd64 + linux/386 (host executor); ${runs} run(s)`,
);
const local = [];
const farm = [];
let firstFarm;
for (let r = 0; r < runs; r++) {
  local.push((await once([{ name: 'local', uri: 'local' }])).ms);
  const f = await once(nodes);
  firstFarm ??= f;
  farm.push(f.ms);
}
const l = median(local);
const f = median(farm);
console.log(`1. two targets, local node alone:        ${fmtS(l)}`);
console.log(
  `   two targets, two SSH nodes (node1 386, node2 amd64): ${fmtS(f)}  (${(f / l).toFixed(2)}× the local run)`,
);

for (const t of firstFarm.report.targets)
  console.log(
    `   first farm build (app new to the nodes), ${t.platform} on ${t.farm.node}: sent ${fmtMB(t.farm.bytesSent)} (${t.farm.blobsSent} blob(s))`,
  );

// --- 2. bytes per target on a rebuild after one file changes -------------------------------------------
const first = await once(nodes);
// One source file changes (about 4 KB of text), as an edit would.
const edited = join(app, 'src', 'src', 'pkg7', 'mod0', 'file7.js');
writeFileSync(edited, `${readFileSync(edited, 'utf8')}// edited ${Date.now()}\n`);
const before = { ...registry.counts };
const t0 = performance.now();
const rebuild = await buildOnFarm(
  {
    image: first.image,
    path: app,
    buildpacks: [bp],
    runImage: `${registry.host}/run:1`,
    insecureRegistries: [registry.host],
    publish: true,
    platforms: ['linux/amd64,linux/386'],
  },
  { nodes },
);
const ms = performance.now() - t0;
console.log(`2. farm rebuild after one file changed: ${fmtS(ms)}`);
for (const t of rebuild.targets)
  console.log(
    `   ${t.platform} on ${t.farm.node}: sent ${(t.farm.bytesSent / 1024).toFixed(1)} KB (${t.farm.blobsSent} blob(s)), received ${(t.farm.bytesReceived / 1024).toFixed(1)} KB; app layers ${t.layerCounts.added} added, ${t.layerCounts.reused} reused, ${t.layerCounts.existing} already there`,
  );
console.log(
  `   registry: ${fmtMB(registry.counts.uploadedBytes - before.uploadedBytes)} uploaded in ${registry.counts.blobUploads - before.blobUploads} blob(s)`,
);

// --- 3. a run image and a cache dir that only the coordinator has ---------------------------------------
const runLayout = join(work, 'run-layout');
const localRun = await openLayoutStore(runLayout, { create: true });
const localRunImages = [];
for (const architecture of ['amd64', '386'])
  localRunImages.push(
    await writeBusyboxRunImage({
      store: localRun,
      tag: `1-${architecture}`,
      platform: { os: 'linux', architecture },
      busyboxPath: '/bin/busybox',
      createdBy: 'bench (coordinator only)',
    }),
  );
await publishIndex({ store: localRun, images: localRunImages.map((i) => i.digest), tags: ['1'] });
// The same copy buildpack, its layer also cached.
const cbp = join(work, 'buildpack-cache');
mkdirSync(join(cbp, 'bin'), { recursive: true });
writeFileSync(
  join(cbp, 'buildpack.toml'),
  'api = "0.12"\n[buildpack]\nid = "bench/cache-copy"\nversion = "1.0.0"\n',
);
writeFileSync(join(cbp, 'bin', 'detect'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
writeFileSync(
  join(cbp, 'bin', 'build'),
  [
    '#!/bin/sh',
    'set -eu',
    'L="$CNB_LAYERS_DIR/deps"; rm -rf "$L"; mkdir -p "$L"',
    'cp -r src "$L/src"',
    'printf "[types]\\nlaunch = true\\ncache = true\\n" > "$L.toml"',
    '',
  ].join('\n'),
  { mode: 0o755 },
);
const cacheDir = join(work, 'cache-dir');
const localOnly = () =>
  buildOnFarm(
    {
      image: `${registry.host}/app-local-inputs:latest`,
      path: app,
      buildpacks: [cbp],
      runImage: `oci:${runLayout}:1`,
      cacheDir,
      insecureRegistries: [registry.host],
      publish: true,
      platforms: ['linux/amd64,linux/386'],
    },
    { nodes },
  );
const show = (report) => {
  for (const t of report.targets)
    console.log(
      `   ${t.platform} on ${t.farm.node}: sent ${(t.farm.bytesSent / 1024).toFixed(1)} KB (${t.farm.blobsSent} blob(s)), received ${fmtMB(t.farm.bytesReceived)} (${t.farm.blobsReceived} blob(s))`,
    );
};
console.log('3. --run-image oci:… and --cache-dir that only the coordinator has, first farm build:');
show(await localOnly());
writeFileSync(join(app, 'src', 'changed.txt'), `changed again ${Date.now()}\n`);
console.log('   rebuild after one file changed:');
show(await localOnly());

await closeSharedRegistryClients?.();
if (process.env.BENCH_DEBUG)
  for (const t of rebuild.targets)
    console.log(t.platform, JSON.stringify(t.layers), JSON.stringify(t.warnings));
process.exit(0);
