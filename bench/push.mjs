// Push benchmark: packfarm copying an OCI layout image into a local docker-registry, against
// `skopeo copy` of the same layout into a fresh registry. Each run pushes to a fresh repository so nothing
// is skipped, and a fresh registry per run. Not a test: it prints figures and the ratio (target ≤ 1.0×).
// The layer holds the shared bench tree (bench/lib.mjs makeTree: ~10k text files and ~160 MB of random data).
//   node bench/push.mjs                     full scale (~200 MB layer)
//   BENCH_SCALE=0.1 node bench/push.mjs     quick run
// Environment: BENCH_SCALE (default 1), BENCH_RUNS (default 3), BENCH_DIST (compiled sources, default dist/).
import { execFileSync } from 'node:child_process';
import { createReadStream } from 'node:fs';
import { loadavg } from 'node:os';
import { join } from 'node:path';
import { load, makeTree, median, putOneLayerImage, setup, startRegistry } from './lib.mjs';

const { scale, runs, work, onExit } = setup('push');
const { writeLayer } = await load('archive/index.js');
const { copyImage } = await load('image/copy.js');
const { openLayoutStore } = await load('image/layout-store.js');
const { createRegistryStore } = await load('image/registry-store.js');
const { parseReference } = await load('oci/reference.js');
const { closeSharedRegistryClients } = await load('registry/index.js');

let registry;
onExit(() => registry?.stop());

async function main() {
  const tree = join(work, 'tree');
  makeTree(tree, scale);
  const layerFile = join(work, 'layer.tar.gz');
  const layer = await writeLayer({ dir: tree, out: layerFile });
  const layoutDir = join(work, 'layout');
  const layout = await openLayoutStore(layoutDir, { create: true });
  await putOneLayerImage(layout, 'bench', { layer, open: () => createReadStream(layerFile) });

  const ours = [];
  const theirs = [];
  // A fresh registry (new port, empty storage) per run: skopeo remembers where it pushed a blob before and
  // would mount it instead of uploading, which would not be the same work.
  for (let i = 0; i < runs; i++) {
    registry?.stop();
    registry = await startRegistry(work);
    const ref = parseReference(`${registry.host}/packfarm-${i}:bench`);
    const dst = createRegistryStore(ref, { insecureRegistries: [registry.host] });
    let t = performance.now();
    await copyImage({ src: layout, srcTarget: 'bench', dst, dstTag: 'bench' });
    ours.push((performance.now() - t) / 1000);
    t = performance.now();
    execFileSync('skopeo', [
      'copy',
      '-q',
      '--dest-tls-verify=false',
      `oci:${layoutDir}:bench`,
      `docker://${registry.host}/skopeo-${i}:bench`,
    ]);
    theirs.push((performance.now() - t) / 1000);
  }
  await closeSharedRegistryClients();
  const a = median(ours);
  const b = median(theirs);
  console.log(
    `packfarm push benchmark — scale ${scale}, ${runs} run(s), node ${process.version}, load ${loadavg()[0].toFixed(2)}`,
  );
  console.log(
    `layer: ${(layer.size / 1e6).toFixed(1)} MB compressed (${(layer.uncompressedSize / 1e6).toFixed(1)} MB tar)`,
  );
  console.log(
    `packfarm image copy oci → registry   ${a.toFixed(2)} s   (runs: ${ours.map((x) => x.toFixed(2)).join(', ')})`,
  );
  console.log(
    `skopeo copy oci → registry           ${b.toFixed(2)} s   (runs: ${theirs.map((x) => x.toFixed(2)).join(', ')})`,
  );
  console.log(`ratio                                ${(a / b).toFixed(2)}× (target ≤ 1.0×)`);
}

await main();
registry?.stop();
