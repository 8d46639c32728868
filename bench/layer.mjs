// Layer writer benchmark: packfarm's writeLayer against `tar --sort=name -cf - . | gzip -N` on the same tree,
// plus peak RSS while writing a ~1 GB layer. Run after `npx tsc -p tsconfig.build.json`:
//   node bench/layer.mjs                 full size (~200 MB / ~10k files tree, ~1 GB RSS tree)
//   BENCH_SCALE=0.1 node bench/layer.mjs quick run
// The tree is bench/lib.mjs's makeTree (the one export and rebuild use); the RSS tree has ~1 GB of binaries.
// Environment: BENCH_SCALE (default 1), BENCH_RUNS (default 3), BENCH_LEVELS (default "1,6"), BENCH_DIST.
// Figures are printed, never asserted: this is not a test.
import { spawn, spawnSync } from 'node:child_process';
import { readFileSync, rmSync, statSync } from 'node:fs';
import { availableParallelism, loadavg } from 'node:os';
import { join } from 'node:path';
import { distUrl, fmtMB, fmtS, load, MB, makeTree, median, setup } from './lib.mjs';

const { scale, runs, work } = setup('layer');
const { writeLayer } = await load('archive/index.js');
const levels = (process.env.BENCH_LEVELS ?? '1,6').split(',').map((s) => Number.parseInt(s, 10));

/** Runs the baseline under /usr/bin/time (when present) to get the CPU time of tar and gzip together. */
function baseline(tree, out, level) {
  // `sync FILE` makes the baseline durable like ours (writeLayer fsyncs before its atomic rename).
  const script = `tar --sort=name -cf - . | gzip -${level} > "$1" && sync "$1"`;
  const timeFile = join(work, 'time.out');
  const timed = hasTime ? ['/usr/bin/time', '-f', '%U %S', '-o', timeFile, 'sh'] : ['sh'];
  const res = spawnSync(timed[0], [...timed.slice(1), '-c', script, 'sh', out], {
    cwd: tree,
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  if (res.status !== 0) throw new Error(`baseline tar | gzip failed with status ${res.status}`);
  if (!hasTime) return Number.NaN;
  const [user, sys] = readFileSync(timeFile, 'utf8').trim().split(/\s+/).map(Number);
  return (user + sys) * 1000;
}
const hasTime = spawnSync('/usr/bin/time', ['-f', '', 'true']).status === 0;

/** Wall and CPU milliseconds of one writeLayer call (CPU includes the thread pool: it is process-wide). */
async function ours(opts) {
  const cpu0 = process.cpuUsage();
  const t0 = process.hrtime.bigint();
  await writeLayer(opts);
  const wall = Number(process.hrtime.bigint() - t0) / 1e6;
  const cpu = process.cpuUsage(cpu0);
  return { wall, cpu: (cpu.user + cpu.system) / 1000 };
}

function timedBaseline(tree, out, level) {
  const t0 = process.hrtime.bigint();
  const cpu = baseline(tree, out, level);
  return { wall: Number(process.hrtime.bigint() - t0) / 1e6, cpu };
}

console.log(`packfarm layer benchmark — scale ${scale}, ${runs} run(s) per figure, node ${process.version}`);

// 1. Throughput against tar | gzip.
const tree = join(work, 'tree');
const treeBytes = makeTree(tree, scale);
console.log(
  `tree: ${Math.round(10_000 * scale)} small text files + random binaries, ${fmtMB(treeBytes)} of content\n`,
);

const rows = [];
for (const level of levels) {
  const outOurs = join(work, `ours-${level}.tgz`);
  const outBase = join(work, `base-${level}.tgz`);
  // Warm the page cache for both sides before measuring.
  await writeLayer({ dir: tree, out: outOurs, gzipLevel: level });
  baseline(tree, outBase, level);
  const o = [];
  const b = [];
  for (let i = 0; i < runs; i++) {
    o.push(await ours({ dir: tree, out: outOurs, gzipLevel: level }));
    b.push(timedBaseline(tree, outBase, level));
  }
  rows.push({
    level,
    ours: median(o.map((x) => x.wall)),
    base: median(b.map((x) => x.wall)),
    oursCpu: median(o.map((x) => x.cpu)),
    baseCpu: median(b.map((x) => x.cpu)),
    oursSize: statSync(outOurs).size,
    baseSize: statSync(outBase).size,
  });
}

const pad = (s, n) => String(s).padEnd(n);
console.log(
  `${pad('gzip', 6)}${pad('writeLayer', 12)}${pad('tar | gzip', 12)}${pad('ratio', 8)}${pad('CPU ours', 10)}${pad('CPU base', 10)}${pad('our blob', 11)}baseline blob`,
);
for (const r of rows) {
  console.log(
    `${pad(`-${r.level}`, 6)}${pad(fmtS(r.ours), 12)}${pad(fmtS(r.base), 12)}${pad(`${(r.ours / r.base).toFixed(2)}x`, 8)}${pad(fmtS(r.oursCpu), 10)}${pad(fmtS(r.baseCpu), 10)}${pad(fmtMB(r.oursSize), 11)}${fmtMB(r.baseSize)}`,
  );
}
console.log(
  `(median of ${runs}; wall time, ratio = writeLayer / baseline (target <= 1.2x), CPU = user+sys of all threads/processes; both fsync their output; ${availableParallelism()} CPUs, load average ${loadavg()[0].toFixed(1)} at the end)\n`,
);
rmSync(tree, { recursive: true, force: true });

// 2. Peak RSS of a child process writing a ~1 GB layer.
const bigTree = join(work, 'big');
const bigBytes = makeTree(bigTree, scale, {
  largeBytes: Math.round(1000 * MB * scale),
  largeFileSize: 100 * MB,
});
// Peak resident set from /proc (VmHWM): getrusage's maxRSS can carry over the parent's peak across fork+exec.
const child = `
  const { readFileSync } = await import('node:fs');
  const { writeLayer } = await import(${JSON.stringify(distUrl('archive/index.js'))});
  const hwm = () => {
    try {
      const m = /VmHWM:\\s+(\\d+) kB/.exec(readFileSync('/proc/self/status', 'utf8'));
      return m ? Number(m[1]) : process.resourceUsage().maxRSS;
    } catch {
      return process.resourceUsage().maxRSS;
    }
  };
  const before = hwm();
  const r = await writeLayer({ dir: process.argv[1], out: process.argv[2] });
  process.stdout.write(JSON.stringify({ before, maxRSS: hwm(), size: r.size }));
`;
const rss = await new Promise((resolve, reject) => {
  const p = spawn(process.execPath, ['--input-type=module', '-e', child, bigTree, join(work, 'big.tgz')], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  let out = '';
  p.stdout.on('data', (d) => {
    out += d;
  });
  p.on('error', reject);
  p.on('close', (code) =>
    code === 0 ? resolve(JSON.parse(out)) : reject(new Error(`child exited ${code}`)),
  );
});
console.log(`${pad('layer', 28)}${pad('content', 12)}${pad('blob', 12)}peak RSS (VmHWM)`);
console.log(
  `${pad('writeLayer, child process', 28)}${pad(fmtMB(bigBytes), 12)}${pad(fmtMB(rss.size), 12)}${(rss.maxRSS / 1024).toFixed(1)} MB (at start ${(rss.before / 1024).toFixed(1)} MB; target < 200 MB)`,
);
