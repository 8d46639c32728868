// Export benchmark: packfarm's exportImage of an app whose tree is ~200 MB onto a tiny run image, into an OCI
// layout, against `tar --sort=name -cf - . | gzip -1` of the same tree; then a no-change re-export (bytes
// written to the store must be 0). Run after `npx tsc -p tsconfig.build.json`:
//   node bench/export.mjs                 full size (~200 MB tree, ~10k files)
//   BENCH_SCALE=0.1 node bench/export.mjs quick run
// Environment: BENCH_SCALE (default 1), BENCH_RUNS (default 3), BENCH_DIST (compiled sources, default dist/).
// Figures are printed, never asserted: this is not a test. Target: export ≤ 1.2 × tar|gzip wall time.
import { spawnSync } from 'node:child_process';
import { mkdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { buildMetadata, fmtMB, fmtS, load, makeTree, median, putTinyRunImage, setup } from './lib.mjs';

const { scale, runs, work } = setup('export');
const { exportImage } = await load('phase/export.js');
const { openLayoutStore } = await load('image/layout-store.js');
const { writeLayerFromEntries } = await load('archive/index.js');
const { writeBuildMetadata, buildMetadataPath } = await load('platform/metadata.js');

const app = join(work, 'app');
const layers = join(work, 'layers');
mkdirSync(layers, { recursive: true });
const bytes = makeTree(app, scale);
await writeBuildMetadata(buildMetadataPath(layers), buildMetadata(), '0.15');

// A one-file run image in its own layout.
const runStore = await openLayoutStore(join(work, 'run'), { create: true });
await putTinyRunImage(runStore, 'run', { writeLayerFromEntries });

console.log(`packfarm export benchmark — scale ${scale}, ${runs} run(s) per figure, node ${process.version}`);
console.log(`app tree: ${fmtMB(bytes)} of content\n`);

const exportOnce = async (dir, { previous = false } = {}) => {
  const store = await openLayoutStore(dir, { create: true });
  const t0 = process.hrtime.bigint();
  const r = await exportImage({
    layersDir: layers,
    appDir: app,
    group: { group: [] },
    runImage: { store: runStore, target: 'run' },
    outputs: [{ store, tags: ['app'] }],
    // As the build and the creator do: the output's own tag is the previous image.
    ...(previous ? { previousImage: { store, target: 'app' } } : {}),
  });
  return { ms: Number(process.hrtime.bigint() - t0) / 1e6, r };
};
const baseline = () => {
  const t0 = process.hrtime.bigint();
  const res = spawnSync(
    'sh',
    ['-c', 'tar --sort=name -cf - . | gzip -1 > "$1" && sync "$1"', 'sh', join(work, 'base.tgz')],
    {
      cwd: app,
      stdio: ['ignore', 'ignore', 'inherit'],
    },
  );
  if (res.status !== 0) throw new Error('tar | gzip failed');
  return Number(process.hrtime.bigint() - t0) / 1e6;
};

// Warm the page cache for both sides.
await exportOnce(join(work, 'warm'));
baseline();
const ours = [];
const base = [];
let digest;
for (let i = 0; i < runs; i++) {
  const dir = join(work, `out${i}`);
  const { ms, r } = await exportOnce(dir);
  ours.push(ms);
  digest = r.digest;
  rmSync(dir, { recursive: true, force: true });
  base.push(baseline());
}
const o = median(ours);
const b = median(base);
console.log(`export (fresh layout)      ${fmtS(o)}   digest ${digest}`);
console.log(`tar --sort=name | gzip -1  ${fmtS(b)}`);
console.log(`ratio                      ${(o / b).toFixed(2)}× (target ≤ 1.2×)\n`);

// No-change re-export into the same layout, with the image itself as the previous image (what `packfarm build`
// does): every layer's diffID is found there, so nothing is compressed again and nothing is written.
const same = join(work, 'same');
await exportOnce(same);
const again = await exportOnce(same, { previous: true });
const added = again.r.layers.filter((l) => l.outcome !== 'reused');
const addedBytes = added.reduce((n, l) => n + l.size, 0);
console.log(
  `no-change re-export        ${fmtS(again.ms)}   layers written to the store: ${added.length} (${addedBytes} bytes; target 0)`,
);
