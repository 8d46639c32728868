// Default-builder benchmark: `packfarm build` of examples/node-hello with the default builder (builders/default:
// Node.js buildpack on Debian 12), published to a real docker-registry. With the builder already made and
// cached, it times (a) a first build (empty build cache, new image), (b) a rebuild with no change, (c) a
// rebuild after an app-code-only change, (d) a rebuild after a dependency change (package.json +
// package-lock.json: `ms` added, so `npm ci` runs again), and prints per target the seconds, the layers the
// report counts as added / reused / already there, what the Node.js buildpack said about npm ci, and the bytes
// uploaded. Baseline, measured in the same run on this machine: what a hand-made image of the app would need at
// least — `npm ci` of the app on the host plus `tar | gzip` of the result. Not a test: it never asserts.
//
//   node bench/default-builder.mjs                                   linux/amd64
//   BENCH_PLATFORMS=linux/amd64,linux/arm64 node bench/default-builder.mjs
//
// The builder (Debian packages, base images, builder image: minutes on first use) is made once in PACKFARM_HOME,
// default <tmpdir>/packfarm-bench-default-builder, which is kept between runs; its making is timed apart and not
// counted. A warm-up build of a throwaway copy unpacks each build image once (also a one-time cost per home).
// Needs `npm run build` first, the npm registry (Node.js binaries, npm, ms) and deb.debian.org on first use.
import { spawnSync } from 'node:child_process';
import { appendFileSync, cpSync, readFileSync } from 'node:fs';
import { availableParallelism, loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { fmtMB, load, setup, startCountingRegistry } from './lib.mjs';

const here = dirname(fileURLToPath(import.meta.url));
const { work, onExit } = setup('default-builder', { runs: 1 });
const platforms = (process.env.BENCH_PLATFORMS ?? 'linux/amd64').split(',').filter(Boolean);
const home = process.env.PACKFARM_HOME ?? join(tmpdir(), 'packfarm-bench-default-builder');
const env = { ...process.env, PACKFARM_HOME: home };

const { build } = await load('api/build.js');
const { defaultBuilder } = await load('builder/default-builder.js');
const { closeSharedRegistryClients } = await load('registry/index.js');

let registry;
onExit(() => registry?.stop());
registry = await startCountingRegistry(work);

const s = (ms) => `${(ms / 1000).toFixed(2)} s`;
const copyApp = (name) => {
  const dir = join(work, name);
  cpSync(join(here, '..', 'examples', 'node-hello'), dir, { recursive: true });
  return dir;
};
const sh = (cmd, cwd) => {
  const t0 = performance.now();
  const r = spawnSync('sh', ['-c', cmd], { cwd, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} failed in ${cwd}: ${r.stderr}`);
  return { ms: performance.now() - t0, stdout: r.stdout };
};

console.log(`packfarm default-builder benchmark — node ${process.version}, ${platforms.join(' + ')}`);
console.log(`data dir (builder cache): ${home}`);
// Shared machines make every figure noisy: the load says how much.
const load1 = () => loadavg()[0].toFixed(1);
console.log(`${availableParallelism()} CPUs, load average ${load1()} at start\n`);

// 0. The builder, made on first use (not counted), then a warm-up build.
let t0 = performance.now();
const made = await defaultBuilder({ env, onProgress: (m) => console.log(`  ${m}`) });
console.log(
  `default builder ${made.created ? 'made now' : 'cached'} in ${s(performance.now() - t0)}: ${made.reference}`,
);

/** One build: wall seconds, the report, and the Node.js buildpack's npm lines per target. */
async function run(image, app, cacheDir) {
  const said = new Map();
  const t = performance.now();
  const report = await build(
    {
      image: `${registry.host}/${image}`,
      path: app,
      platforms,
      publish: true,
      insecureRegistries: [registry.host],
      cacheDir,
      tmpDir: work,
    },
    {
      env,
      onEvent: (e) => {
        if (e.type === 'output' && /npm ci|Reusing node_modules|Installing Node|Reusing Node/.test(e.line))
          said.set(e.target, [...(said.get(e.target) ?? []), e.line.trim()]);
      },
    },
  );
  return { ms: performance.now() - t, report, said };
}

function show(label, r) {
  const p = r.report.timings;
  console.log(
    `${label}: ${s(r.ms)} wall (plan ${p.plan.toFixed(2)} s, targets ${p.targets.toFixed(2)} s, publish ${p.publish.toFixed(2)} s)`,
  );
  for (const t of r.report.targets) {
    const c = t.layerCounts;
    const added = t.layers.filter((l) => l.outcome === 'added').map((l) => l.name);
    console.log(
      `  ${t.platform} (${t.runs}): ${t.timings.total.toFixed(2)} s (buildpacks ${t.timings.buildpacks.toFixed(2)} s); layers added ${c.added}, reused ${c.reused}, already there ${c.existing}, mounted ${c.mounted}; base layers ${t.baseLayers.exists} there / ${t.baseLayers.mounted} mounted / ${t.baseLayers.uploaded} uploaded`,
    );
    const phases = ['analyze', 'detect', 'restore', 'build', 'export', 'cache']
      .map((ph) => `${ph} ${(t.timings[ph] ?? 0).toFixed(2)}`)
      .join(', ');
    console.log(`    phases (s): prepare ${t.timings.prepare.toFixed(2)}, ${phases}`);
    console.log(`    added: ${added.join(', ') || 'none'}; ${t.bytesUploaded} bytes uploaded`);
    for (const line of r.said.get(t.platform) ?? []) console.log(`    buildpack: ${line}`);
  }
}

t0 = performance.now();
await run('warm-up:latest', copyApp('warm-up'), join(work, 'cache-warm-up'));
console.log(`warm-up build (build images unpacked once per data dir): ${s(performance.now() - t0)}\n`);

const app = copyApp('app');
const cache = join(work, 'cache');
const first = await run('node-hello:bench', app, cache);
show('(a) first build, builder cached, empty build cache', first);
const again = await run('node-hello:bench', app, cache);
show('(b) rebuild, no change', again);
console.log(`    same digest as (a): ${again.report.digest === first.report.digest}`);
appendFileSync(join(app, 'server.js'), `// edited at ${new Date().toISOString()}\n`);
const code = await run('node-hello:bench', app, cache);
show('(c) rebuild, app code changed (server.js)', code);
// A dependency change as a developer makes it: package.json and package-lock.json both change.
sh('npm install --package-lock-only --no-audit --no-fund --silent ms@2.1.3', app);
const lock = await run('node-hello:bench', app, cache);
show('(d) rebuild, dependency added (package-lock.json changed)', lock);

// Baseline: npm ci on the host, then the app with its node_modules as one tar.gz (what any image of it holds).
const base = copyApp('baseline');
cpSync(join(app, 'package.json'), join(base, 'package.json'));
cpSync(join(app, 'package-lock.json'), join(base, 'package-lock.json'));
const npmCi = sh('npm ci --no-audit --no-fund --silent', base);
const tgz = sh('tar --sort=name -cf - . | gzip -6 | wc -c', base);
const baseline = npmCi.ms + tgz.ms;
console.log(
  `\nbaseline on the host: npm ci ${s(npmCi.ms)} + tar|gzip ${s(tgz.ms)} (${fmtMB(Number(tgz.stdout.trim()))}) = ${s(baseline)}`,
);

console.log(`\nsummary (wall seconds; load average ${load1()} at the end)`);
const row = (label, r) =>
  console.log(
    `  ${label.padEnd(34)} ${s(r.ms).padStart(9)}   ×(a) ${(r.ms / first.ms).toFixed(2)}   ×baseline ${(r.ms / baseline).toFixed(2)}`,
  );
row('(a) first build', first);
row('(b) no-change rebuild', again);
row('(c) app-code change', code);
row('(d) package-lock change', lock);
const reused = (r) => r.report.targets.map((t) => `${t.platform} ${t.layerCounts.reused}`).join(', ');
console.log(
  `  no-change rebuild: ${again.report.bytesUploaded} bytes uploaded, layers reused: ${reused(again)}; lockfile unchanged in (c): ${[...code.said.values()].flat().some((l) => l.startsWith('Reusing node_modules'))}; npm ci in (d): ${[...lock.said.values()].flat().some((l) => l.startsWith('Running npm ci'))}`,
);
console.log(`  package-lock.json now: ${readFileSync(join(app, 'package-lock.json'), 'utf8').length} bytes`);
await closeSharedRegistryClients?.();
