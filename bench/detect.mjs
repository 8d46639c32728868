// Detect-phase overhead: an order of 30 groups × 2 buildpacks whose bin/detect is `exit 100` (nothing
// passes), against bare spawns of the same number of processes measured in the same run.
// Run after `npm run build`:  node bench/detect.mjs [rounds]
import { spawn } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { load, median, scratch } from './lib.mjs';

const { detect } = await load('phase/detect.js');

const GROUPS = 30;
const PER_GROUP = 2;
const ROUNDS = Number(process.argv[2] ?? 7);

const { work: root } = scratch('detect');
const buildpacks = join(root, 'buildpacks');
const app = join(root, 'workspace');
const platform = join(root, 'platform');
await mkdir(app, { recursive: true });
await mkdir(join(platform, 'env'), { recursive: true });

const ids = [];
for (let i = 0; i < GROUPS * PER_GROUP; i++) {
  const id = `bench/bp-${i}`;
  const dir = join(buildpacks, `bench_bp-${i}`, '1.0.0');
  await mkdir(join(dir, 'bin'), { recursive: true });
  await writeFile(
    join(dir, 'buildpack.toml'),
    `api = "0.12"\n[buildpack]\nid = "${id}"\nversion = "1.0.0"\n`,
  );
  await writeFile(join(dir, 'bin', 'detect'), '#!/bin/sh\nexit 100\n');
  await chmod(join(dir, 'bin', 'detect'), 0o755);
  ids.push(id);
}
const detectScripts = ids.map((_, i) => join(buildpacks, `bench_bp-${i}`, '1.0.0', 'bin', 'detect'));

const groupsOf = (list) =>
  Array.from({ length: GROUPS }, (_, g) => ({
    group: list
      .slice(g * PER_GROUP, g * PER_GROUP + PER_GROUP)
      .map((id) => ({ id, version: '1.0.0', optional: false })),
  }));
const distinctOrder = groupsOf(ids);
// The same two buildpacks in every group: detect runs each once and reuses the result.
const sharedOrder = groupsOf(Array.from({ length: GROUPS * PER_GROUP }, (_, i) => ids[i % PER_GROUP]));

const env = { PATH: process.env.PATH ?? '/usr/bin:/bin' };
const target = { os: 'linux', arch: 'amd64' };

// Exits 100 without starting a process: what detect costs apart from the processes themselves.
const noProcessExecutor = { kind: 'none', run: async () => ({ exitCode: 100 }) };

async function runDetect(order, executor) {
  try {
    await detect({
      appDir: app,
      platformDir: platform,
      buildpacksDir: buildpacks,
      order,
      target,
      hostEnv: env,
      ...(executor ? { executor } : {}),
    });
  } catch (err) {
    if (err.exitCode !== 20) throw err;
    return;
  }
  throw new Error('expected detection to fail');
}

function spawnOnce(file, args) {
  return new Promise((resolve, reject) => {
    const c = spawn(file, args, { cwd: app, env, stdio: ['ignore', 'pipe', 'pipe'] });
    c.stdout.resume();
    c.stderr.resume();
    c.on('error', reject);
    c.on('close', resolve);
  });
}

const sh = () => spawnOnce('/bin/sh', ['-c', 'exit 100']);
const script = (i) => spawnOnce(detectScripts[i], [platform, '/dev/null']);

async function sequential(fn) {
  for (let i = 0; i < GROUPS * PER_GROUP; i++) await fn(i);
}
async function pairwise(fn) {
  for (let g = 0; g < GROUPS; g++)
    await Promise.all(Array.from({ length: PER_GROUP }, (_, k) => fn(g * PER_GROUP + k)));
}
async function pooled(fn) {
  let next = 0;
  const worker = async () => {
    while (next < GROUPS * PER_GROUP) await fn(next++);
  };
  await Promise.all(Array.from({ length: availableParallelism() }, worker));
}

async function time(fn) {
  const t = performance.now();
  await fn();
  return performance.now() - t;
}

const cases = {
  'detect: 30 groups x 2, 60 distinct buildpacks': () => runDetect(distinctOrder),
  'detect: 30 groups x 2, same 2 buildpacks (cached)': () => runDetect(sharedOrder),
  'detect: 30 groups x 2, no processes (lifecycle only)': () => runDetect(distinctOrder, noProcessExecutor),
  "bare sh -c 'exit 100', sequential": () => sequential(sh),
  "bare sh -c 'exit 100', 2 at a time": () => pairwise(sh),
  "bare sh -c 'exit 100', pool of CPU count": () => pooled(sh),
  'bare bin/detect scripts, sequential': () => sequential(script),
  'bare bin/detect scripts, 2 at a time (like detect)': () => pairwise(script),
  'execa bin/detect scripts, 2 at a time': () =>
    pairwise((i) =>
      execa(detectScripts[i], [platform, '/dev/null'], { cwd: app, env, extendEnv: false, reject: false }),
    ),
};

// Warm up every path once (module loading, JIT), then interleave rounds so drift hits every case alike.
for (const fn of Object.values(cases)) await fn();
const samples = Object.fromEntries(Object.keys(cases).map((k) => [k, []]));
for (let r = 0; r < ROUNDS; r++) for (const [k, fn] of Object.entries(cases)) samples[k].push(await time(fn));

console.log(
  `detect bench: ${GROUPS} groups x ${PER_GROUP} buildpacks, bin/detect = exit 100, ${ROUNDS} rounds, median wall time`,
);
console.log(`node ${process.version}, ${availableParallelism()} CPUs\n`);
const width = Math.max(...Object.keys(cases).map((k) => k.length));
const med = Object.fromEntries(Object.entries(samples).map(([k, xs]) => [k, median(xs)]));
for (const [k, v] of Object.entries(med)) console.log(`${k.padEnd(width)}  ${v.toFixed(1).padStart(8)} ms`);

const detectMs = med['detect: 30 groups x 2, 60 distinct buildpacks'];
const baseMs = med['bare bin/detect scripts, 2 at a time (like detect)'];
const procs = GROUPS * PER_GROUP;
console.log(
  `\nlifecycle overhead vs the same processes spawned 2 at a time: ${(detectMs - baseMs).toFixed(1)} ms total, ` +
    `${((detectMs - baseMs) / procs).toFixed(2)} ms per bin/detect, ratio ${(detectMs / baseMs).toFixed(2)}x`,
);
const own = med['detect: 30 groups x 2, no processes (lifecycle only)'];
console.log(
  `lifecycle work alone (same order, processes replaced by a no-op): ${own.toFixed(1)} ms total, ` +
    `${(own / procs).toFixed(2)} ms per buildpack`,
);
console.log(
  `vs bare sequential sh -c: ratio ${(detectMs / med["bare sh -c 'exit 100', sequential"]).toFixed(2)}x; ` +
    `execa instead of child_process for the same spawns: ratio ${(med['execa bin/detect scripts, 2 at a time'] / baseMs).toFixed(2)}x`,
);
