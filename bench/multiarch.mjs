// Multi-arch build benchmark. Not a test.
//
// 1. amd64 (native) + arm64 (qemu-emulated) in one `packfarm build`, against each target alone, in the same
//    run: the goal is a wall time of at most 1.15× the slower single target (the targets run in parallel and
//    the lifecycle's own work, tar/gzip/hashing/registry, stays native).
// 2. Side by side with `podman build --platform linux/amd64,linux/arm64 --manifest` of an equivalent
//    Containerfile (the same busybox base per architecture, the same app files, the same build script as a
//    RUN step): the first build, and a rebuild after one app file changes. Both write locally (packfarm to an
//    OCI layout, podman to its own storage).
//
// Build and run images are busybox images of each architecture made from Debian's busybox-static, as the
// tests make them; the benchmark takes the binaries from the tests' package cache (<tmp>/packfarm-debian-
// packages, filled by `npx vitest run test/integration/build-multiarch.test.ts`).
//   node bench/multiarch.mjs                 BENCH_RUNS=3 medians
//   BENCH_SCALE=0.3 node bench/multiarch.mjs lighter build script and app
//   BENCH_SKIP_PODMAN=1 node bench/multiarch.mjs   without the podman comparison
import { execFile, spawnSync } from 'node:child_process';
import { promisify } from 'node:util';
import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fmtS, load, median, setup, startCountingRegistry } from './lib.mjs';

const { scale, runs, work, onExit } = setup('multiarch', { runs: 3 });
const { build } = await load('api/build.js');
const { writeBusyboxRunImage } = await load('builder/busybox-run-image.js');
const { publishIndex } = await load('image/publish-index.js');
const { createRegistryStore } = await load('image/registry-store.js');
const { parseReference } = await load('oci/reference.js');
const { closeSharedRegistryClients } = await load('registry/index.js');
const { detectPlatforms, howToRun } = await load('exec/binfmt.js');

const execFileP = promisify(execFile);
const ARCHES = ['amd64', 'arm64'];
const DEB = { amd64: 'amd64', arm64: 'arm64' };
const debCache = join(process.env.PACKFARM_TEST_DEB_CACHE ?? tmpdir(), 'packfarm-debian-packages');
const busybox = Object.fromEntries(
  ARCHES.map((a) => [a, join(debCache, DEB[a], 'busybox-static', 'root', 'bin', 'busybox')]),
);
for (const [a, path] of Object.entries(busybox))
  if (!existsSync(path)) {
    console.error(
      `${path} is missing (busybox-static for ${a}); fill the cache with: npx vitest run test/integration/build-multiarch.test.ts`,
    );
    process.exit(2);
  }
const machine = await detectPlatforms();
if (!howToRun(machine, { os: 'linux', architecture: 'arm64' })) {
  console.error('this machine cannot run linux/arm64: as root, run `packfarm node setup-emulation`');
  process.exit(2);
}

let registry;
onExit(() => registry?.stop());
registry = await startCountingRegistry(work);
const store = (repo) =>
  createRegistryStore(parseReference(`${registry.host}/${repo}`), { insecureRegistries: [registry.host] });

// The build script, once as a buildpack's bin/build and once as a RUN step: CPU work in the shell (emulated
// for arm64), then a copy of the app files and a listing of them into the output.
const loops = Math.round(60_000 * scale);
const script = (out, app) =>
  [
    'set -eu',
    `i=0; while [ $i -lt ${loops} ]; do i=$((i+1)); done`,
    `mkdir -p "${out}"`,
    `cp -r "${app}/src" "${out}/src"`,
    `find "${app}" -type f | sort | xargs cat | wc -c > "${out}/bytes"`,
    `uname -m > "${out}/machine"`,
  ].join('\n');

const bp = join(work, 'buildpack');
mkdirSync(join(bp, 'bin'), { recursive: true });
writeFileSync(
  join(bp, 'buildpack.toml'),
  'api = "0.12"\n[buildpack]\nid = "bench/script"\nversion = "1.0.0"\n',
);
writeFileSync(join(bp, 'bin', 'detect'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
writeFileSync(
  join(bp, 'bin', 'build'),
  [
    '#!/bin/sh',
    script('$CNB_LAYERS_DIR/out', '.'),
    'printf "[types]\\nlaunch = true\\n" > "$CNB_LAYERS_DIR/out.toml"',
    'printf "[[processes]]\\ntype = \\"web\\"\\ncommand = [\\"cat\\", \\"/layers/bench_script/out/machine\\"]\\ndefault = true\\n" > "$CNB_LAYERS_DIR/launch.toml"',
    '',
  ].join('\n'),
  { mode: 0o755 },
);

const app = join(work, 'app');
const files = Math.max(10, Math.round(300 * scale));
for (let i = 0; i < files; i++) {
  mkdirSync(join(app, 'src', `d${i % 10}`), { recursive: true });
  writeFileSync(join(app, 'src', `d${i % 10}`, `f${i}.txt`), `${'line of app text\n'.repeat(200)}${i}\n`);
}

// Build image (CNB user) and run image per architecture, as indexes.
const buildImages = [];
const runImages = [];
for (const a of ARCHES) {
  const platform = { os: 'linux', architecture: a };
  buildImages.push(
    await writeBusyboxRunImage({
      store: store('build'),
      tag: `1-${a}`,
      platform,
      busyboxPath: busybox[a],
      env: ['CNB_USER_ID=1000', 'CNB_GROUP_ID=1000'],
    }),
  );
  runImages.push(
    await writeBusyboxRunImage({ store: store('run'), tag: `1-${a}`, platform, busyboxPath: busybox[a] }),
  );
}
await publishIndex({ store: store('build'), images: buildImages.map((i) => i.digest), tags: ['1'] });
await publishIndex({ store: store('run'), images: runImages.map((i) => i.digest), tags: ['1'] });

const env = { ...process.env, PACKFARM_HOME: join(work, 'home') };
let n = 0;
const packfarm = async (platforms, out) => {
  const t0 = performance.now();
  const r = await build(
    {
      image: out ?? `oci:${join(work, 'out', String(n++))}:app`,
      path: app,
      buildpacks: [bp],
      buildImage: `${registry.host}/build:1`,
      runImage: `${registry.host}/run:1`,
      insecureRegistries: [registry.host],
      platforms,
      cacheDir: join(work, 'cache', String(n)),
      tmpDir: work,
    },
    { env },
  );
  return { ms: performance.now() - t0, report: r };
};

console.log(
  `packfarm multi-arch benchmark — scale ${scale}, ${runs} run(s), ${cpus().length} CPUs, node ${process.version}`,
);
console.log(`build script: ${loops} shell loop iterations + copy of ${files} app files\n`);

// Warm-up: unpack both build images' root filesystems once (later builds reuse them).
await packfarm(['linux/amd64,linux/arm64']);

const times = { amd64: [], arm64: [], both: [] };
for (let i = 0; i < runs; i++) {
  const amd64 = await packfarm(['linux/amd64']);
  const arm64 = await packfarm(['linux/arm64']);
  const both = await packfarm(['linux/amd64,linux/arm64']);
  times.amd64.push(amd64.ms);
  times.arm64.push(arm64.ms);
  times.both.push(both.ms);
  if (i === 0)
    for (const [label, r] of [
      ['amd64 alone', amd64.report],
      ['arm64 alone', arm64.report],
      ['both', both.report],
    ]) {
      const w = r.timings;
      console.log(`  ${label}: plan ${w.plan} s, targets ${w.targets} s, publish ${w.publish} s`);
      for (const t of r.targets) {
        const x = t.timings;
        console.log(
          `    ${t.platform} (${t.runs}): prepare ${x.prepare} analyze ${x.analyze} detect ${x.detect} restore ${x.restore} build ${x.build} (buildpacks ${x.buildpacks}) export ${x.export} cache ${x.cache} = ${x.total} s`,
        );
      }
    }
}
const m = Object.fromEntries(Object.entries(times).map(([k, v]) => [k, median(v)]));
const slower = Math.max(m.amd64, m.arm64);
console.log('\none build of both targets vs each alone (medians)');
console.log(`  linux/amd64 alone (native)    ${fmtS(m.amd64)}`);
console.log(`  linux/arm64 alone (emulated)  ${fmtS(m.arm64)}`);
console.log(`  both in one build             ${fmtS(m.both)}`);
console.log(`  ratio both / slower single    ${(m.both / slower).toFixed(2)}×   (goal ≤ 1.15×)`);

if (process.env.BENCH_SKIP_PODMAN) process.exit(0);
// ---- podman build --platform … --manifest of the same thing ----------------------------------------------
const pdir = `/tmp/pfb-${process.pid}`;
mkdirSync(pdir, { recursive: true });
const podmanBase = [
  '--root',
  join(pdir, 'root'),
  '--runroot',
  join(pdir, 'run'),
  '--runtime',
  '/usr/sbin/runc',
  '--cgroup-manager',
  'cgroupfs',
  '--events-backend',
  'none',
];
// Asynchronous: the registry's counting proxy runs in this process and must keep serving podman.
const podman = async (...args) => {
  const t0 = performance.now();
  await execFileP('podman', [...podmanBase, ...args], { maxBuffer: 64 * 1024 * 1024 }).catch((err) => {
    throw new Error(`podman ${args.join(' ')} failed:\n${err.stderr ?? err.message}`);
  });
  return performance.now() - t0;
};
// podman's storage holds an overlay mount: reset it (which unmounts it) before removing the directory.
onExit(() => {
  spawnSync('podman', [...podmanBase, 'system', 'reset', '--force'], { stdio: 'ignore' });
  spawnSync('umount', [join(pdir, 'root', 'overlay')], { stdio: 'ignore' });
  spawnSync('rm', ['-rf', pdir]);
});
const ctx = join(work, 'podman-ctx');
mkdirSync(ctx, { recursive: true });
spawnSync('cp', ['-r', app, join(ctx, 'app')]);
writeFileSync(join(ctx, 'build.sh'), `${script('/out', '/workspace')}\n`);
writeFileSync(
  join(ctx, 'Containerfile'),
  `FROM ${registry.host}/build:1\nUSER 0\nCOPY build.sh /build.sh\nCOPY app /workspace\nRUN sh /build.sh\n`,
);
// The base of both architectures pulled beforehand, as packfarm's root filesystems were unpacked beforehand.
for (const a of ARCHES)
  await podman('pull', '--quiet', '--tls-verify=false', '--arch', a, `${registry.host}/build:1`);
const podmanBuild = (tag) =>
  podman(
    'build',
    '--quiet',
    '--tls-verify=false',
    '--ulimit',
    'nofile=20000:20000',
    '--ulimit',
    'nproc=1000:1000',
    '--platform',
    'linux/amd64,linux/arm64',
    '--manifest',
    `localhost/bench-${tag}`,
    '-f',
    join(ctx, 'Containerfile'),
    ctx,
  );
const change = (dir, i) => writeFileSync(join(dir, 'src', 'd0', 'f0.txt'), `changed ${i} ${Date.now()}\n`);

const pfFirst = [];
const pfRebuild = [];
const pdFirst = [];
const pdRebuild = [];
for (let i = 0; i < runs; i++) {
  // packfarm: a fresh output and cache, then a rebuild into the same output after one app file changed.
  const out = `oci:${join(work, 'cmp', String(i))}:app`;
  pfFirst.push((await packfarm(['linux/amd64,linux/arm64'], out)).ms);
  change(app, i);
  pfRebuild.push((await packfarm(['linux/amd64,linux/arm64'], out)).ms);
  // podman: a fresh context (no cached COPY/RUN layers of it), then the same change.
  spawnSync('rm', ['-rf', join(ctx, 'app')]);
  spawnSync('cp', ['-r', app, join(ctx, 'app')]);
  writeFileSync(join(ctx, 'app', 'run-marker'), `${i}\n`);
  pdFirst.push(await podmanBuild(`first-${i}`));
  change(join(ctx, 'app'), i + 1000);
  pdRebuild.push(await podmanBuild(`first-${i}`));
}
console.log('\npackfarm vs podman build --platform linux/amd64,linux/arm64 --manifest (medians)');
console.log(
  `  first build:                 packfarm ${fmtS(median(pfFirst))}   podman ${fmtS(median(pdFirst))}   ratio ${(median(pfFirst) / median(pdFirst)).toFixed(2)}×`,
);
console.log(
  `  rebuild after 1 file change: packfarm ${fmtS(median(pfRebuild))}   podman ${fmtS(median(pdRebuild))}   ratio ${(median(pfRebuild) / median(pdRebuild)).toFixed(2)}×`,
);

await closeSharedRegistryClients?.();
await registry.stop();
