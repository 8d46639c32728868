// Rebase benchmark: a ~1 GB app image in a real local docker-registry is moved from run image v1 to v2 with
// packfarm's rebase (manifest and config edits, run layer mounted). A small counting proxy in front of the
// registry measures every byte that crosses it. Baseline, measured in the same run: pulling the same app image
// (what a rebase that downloads the image would have to move at least), with packfarm's copy into a layout.
// Not a test: figures are printed against the targets (rebase ≤ 2 s, < 1 MiB through the registry).
//   node bench/rebase.mjs                  full size (~1 GB of app layers)
//   BENCH_SCALE=0.1 node bench/rebase.mjs  quick run
// Environment: BENCH_SCALE (default 1), BENCH_RUNS (rebase runs, default 3), BENCH_DIST (default dist/).
import { mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import {
  buildMetadata,
  load,
  MB as MiB,
  median,
  putTinyRunImage,
  setup,
  startCountingRegistry,
  writeRandomFile,
} from './lib.mjs';

const { scale, runs, work, onExit } = setup('rebase');
const { exportImage } = await load('phase/export.js');
const { rebase } = await load('phase/rebase.js');
const { copyImage } = await load('image/copy.js');
const { openLayoutStore } = await load('image/layout-store.js');
const { createRegistryStore } = await load('image/registry-store.js');
const { writeLayerFromEntries } = await load('archive/index.js');
const { parseReference } = await load('oci/reference.js');
const { closeSharedRegistryClients } = await load('registry/index.js');

let registry;
onExit(() => registry?.stop());

/** A tiny run image: its one layer holds /etc/run-image-version, base labels as a run image has them. */
const pushRunImage = (store, version) =>
  putTinyRunImage(store, `v${version}`, {
    writeLayerFromEntries,
    extra: { 'etc/run-image-version': `${version}\n` },
    labels: { 'io.buildpacks.base.distro.name': 'bench', 'io.buildpacks.base.distro.version': '1' },
  });

/** Build output with `layers` launch layers of random (incompressible) data, ~1 GB in all at scale 1. */
function makeBuildOutput(root) {
  const layersDir = join(root, 'layers');
  const appDir = join(root, 'workspace');
  mkdirSync(appDir, { recursive: true });
  writeFileSync(join(appDir, 'app.txt'), 'app\n');
  const layerCount = 4;
  const perLayer = Math.max(1, Math.round((1024 * scale) / layerCount)) * MiB;
  for (let i = 0; i < layerCount; i++) {
    const dir = join(layersDir, 'bench_app', `dep${i}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(layersDir, 'bench_app', `dep${i}.toml`), '[types]\nlaunch = true\n');
    writeRandomFile(join(dir, 'blob.bin'), perLayer);
  }
  return { layersDir, appDir };
}

async function main() {
  registry = await startCountingRegistry(work);
  const host = registry.host;
  const storeFor = (repo) =>
    createRegistryStore(parseReference(`${host}/${repo}`), { insecureRegistries: [host] });
  const run = storeFor('run');
  await pushRunImage(run, 1);
  await pushRunImage(run, 2);

  const { layersDir, appDir } = makeBuildOutput(join(work, 'build'));
  const app = storeFor('app');
  let t = performance.now();
  const exported = await exportImage({
    layersDir,
    appDir,
    group: { group: [{ id: 'bench/app', version: '1.0.0', api: '0.10' }] },
    metadata: buildMetadata([{ id: 'bench/app', version: '1.0.0', api: '0.10' }]),
    runImage: { store: run, target: 'v1', name: `${host}/run:v1` },
    platform: { os: 'linux', architecture: 'amd64' },
    outputs: [{ store: app, tags: ['v1'] }],
    concurrency: 2,
  });
  const exportSeconds = (performance.now() - t) / 1000;
  const appBytes = exported.layers.reduce((n, l) => n + l.size, 0);

  // Baseline: what a pull of the app image moves (the least a download-based rebase would move).
  registry.reset();
  const pulled = await openLayoutStore(join(work, 'pulled'), { create: true });
  t = performance.now();
  await copyImage({ src: app, srcTarget: 'v1', dst: pulled, dstTag: 'v1' });
  const pullSeconds = (performance.now() - t) / 1000;
  const pullBytes = registry.counts.requestBytes + registry.counts.responseBytes;
  rmSync(join(work, 'pulled'), { recursive: true, force: true });

  // Each run rebases the v1 image in a repository of its own (filled by mounting, untimed), so every run mounts
  // the new run layer and uploads a new config: the same work as the first rebase of a real image.
  const times = [];
  const moved = [];
  let last;
  for (let i = 0; i < runs; i++) {
    const repo = storeFor(`app-${i}`);
    await copyImage({ src: app, srcTarget: 'v1', dst: repo, dstTag: 'latest' });
    registry.reset();
    t = performance.now();
    last = await rebase({
      source: { store: repo, target: 'latest' },
      runImage: { store: run, target: 'v2', name: `${host}/run:v2` },
    });
    times.push((performance.now() - t) / 1000);
    moved.push({ ...registry.counts });
  }
  await closeSharedRegistryClients();
  await registry.stop();

  const secs = median(times);
  const bytes = median(moved.map((x) => x.requestBytes + x.responseBytes));
  const m = moved.find((x) => x.requestBytes + x.responseBytes === bytes);
  console.log(
    `packfarm rebase benchmark — scale ${scale}, ${runs} run(s), node ${process.version}, load ${loadavg()[0].toFixed(2)}`,
  );
  console.log(
    `app image: ${(appBytes / 1e6).toFixed(0)} MB in ${exported.layers.length} app layers (export + push ${exportSeconds.toFixed(1)} s)`,
  );
  console.log(
    `baseline: pull of the app image          ${pullSeconds.toFixed(2)} s   ${(pullBytes / MiB).toFixed(1)} MiB through the registry`,
  );
  console.log(
    `packfarm rebase v1 → v2 (registry)        ${secs.toFixed(3)} s   (runs: ${times.map((x) => x.toFixed(3)).join(', ')})`,
  );
  console.log(
    `bytes through the registry               ${(bytes / 1024).toFixed(1)} KiB (${bytes} B: ${m.requestBytes} B up, ${m.responseBytes} B down; ${m.requests} requests, ${m.blobGets} blob GETs, ${m.mounts} mounts, ${m.blobUploads} uploads)`,
  );
  console.log(
    `result: ${last.digest}, ${last.images[0].baseLayers.removed} run layer(s) swapped, ${last.images[0].appLayers} app layers kept`,
  );
  console.log(
    `targets: time ${secs <= 2 ? 'met' : 'MISSED'} (${secs.toFixed(3)} s ≤ 2 s), bytes ${bytes < MiB ? 'met' : 'MISSED'} (${(bytes / 1024).toFixed(1)} KiB < 1 MiB); vs pull: ${(pullSeconds / secs).toFixed(0)}× faster, ${(pullBytes / bytes).toFixed(0)}× fewer bytes`,
  );
}

await main();
