// base create benchmark: `packfarm base create` for one architecture (build: dash, coreutils; run: dash) from an
// empty data dir (apt-get update, downloads from deb.debian.org) and again with the lists and .debs cached,
// with the time of each step taken from the events. Needs network access to deb.debian.org.
//   node bench/base.mjs            (BENCH_ARCH=arm64 for another architecture)
// Figures are printed, never asserted: this is not a test.
import { join } from 'node:path';
import { fmtS, load, setup } from './lib.mjs';

const { work } = setup('base');
const { createBaseImages } = await load('builder/base/create.js');
const { resolveBaseDefinition } = await load('builder/base/definition.js');
const arch = process.env.BENCH_ARCH ?? 'amd64';
const definition = resolveBaseDefinition(
  {},
  {
    arch: [arch],
    packages: ['dash', 'coreutils'],
    runPackages: ['dash'],
    essential: { build: false, run: false },
  },
  'bench',
);
const dataDir = join(work, 'data');

async function run(label, n) {
  const t0 = performance.now();
  const steps = [];
  let last = t0;
  const r = await createBaseImages({
    definition,
    buildTag: `oci:${join(work, `build-${n}`)}:1`,
    runTag: `oci:${join(work, `run-${n}`)}:1`,
    dataDir,
    onEvent: (e) => {
      const now = performance.now();
      if (e.type === 'progress' || e.type === 'image')
        steps.push(
          `${fmtS(now - last)} before "${e.type === 'image' ? `${e.kind} image written` : e.message}"`,
        );
      last = now;
    },
  });
  const total = performance.now() - t0;
  console.log(
    `${label}: ${fmtS(total)} (build ${r.build.digest.slice(7, 19)}, run ${r.run.digest.slice(7, 19)})`,
  );
  for (const s of steps) console.log(`  ${s}`);
  return { total, r };
}

const cold = await run('cold (empty data dir)', 1);
const warm = await run('warm (lists and .debs cached)', 2);
console.log(
  `warm/cold: ${(warm.total / cold.total).toFixed(2)}; same digests: ${cold.r.build.digest === warm.r.build.digest && cold.r.run.digest === warm.r.run.digest}`,
);
