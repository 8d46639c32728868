// Push benchmark: packfarm copying an OCI layout image into a local docker-registry, against
// `skopeo copy` of the same layout into a fresh registry. Each run pushes to a fresh repository so nothing
// is skipped, and a fresh registry per run. Not a test: it prints figures and the ratio (target ≤ 1.0×).
//   node bench/push.mjs                     full scale (~200 MB layer)
//   BENCH_SCALE=0.1 node bench/push.mjs     quick run
// Environment: BENCH_SCALE (default 1), BENCH_RUNS (default 3).
import { execFileSync, spawn } from 'node:child_process';
import { createReadStream, mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { join } from 'node:path';
import { writeLayer } from '../dist/archive/index.js';
import { copyImage } from '../dist/image/copy.js';
import { openLayoutStore } from '../dist/image/layout-store.js';
import { createRegistryStore } from '../dist/image/registry-store.js';
import { sha256Digest } from '../dist/oci/digest.js';
import { parseReference } from '../dist/oci/reference.js';
import { closeSharedRegistryClients } from '../dist/registry/index.js';

const scale = Number(process.env.BENCH_SCALE ?? '1');
const runs = Number(process.env.BENCH_RUNS ?? '3');
if (!(scale > 0) || !(runs > 0)) throw new Error('BENCH_SCALE and BENCH_RUNS must be positive numbers');
const work = mkdtempSync(join(tmpdir(), 'packfarm-bench-push-'));
let registry;

function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

async function startRegistry() {
  const port = await freePort();
  const dir = join(work, `registry-${port}`);
  mkdirSync(join(dir, 'storage'), { recursive: true });
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/storage\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  const proc = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v2/`);
      if (res.ok) return { host: `127.0.0.1:${port}`, proc };
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill();
  throw new Error('docker-registry did not start (apt-get install docker-registry)');
}

/** A ~200 MB tree at scale 1: 8k small text files (≈40 MB) and 8 large random files (≈160 MB). */
function makeTree(root) {
  const small = Math.round(8000 * scale);
  for (let i = 0; i < small; i++) {
    const d = join(root, `d${i % 100}`);
    mkdirSync(d, { recursive: true });
    writeFileSync(join(d, `f${i}.txt`), `line ${i} `.repeat(500));
  }
  const big = Math.max(1, Math.round(8 * scale));
  for (let i = 0; i < big; i++) writeFileSync(join(root, `big${i}.bin`), randomBytes(20 * 1024 * 1024));
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  const tree = join(work, 'tree');
  makeTree(tree);
  const layerFile = join(work, 'layer.tar.gz');
  const layer = await writeLayer({ dir: tree, out: layerFile });
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [layer.diffId] },
      config: {},
    }),
  );
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: {
        mediaType: 'application/vnd.oci.image.config.v1+json',
        digest: sha256Digest(config),
        size: config.length,
      },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: layer.size },
      ],
    }),
  );
  const layoutDir = join(work, 'layout');
  const layout = await openLayoutStore(layoutDir, { create: true });
  await layout.putBlob({ digest: layer.digest, size: layer.size, open: () => createReadStream(layerFile) });
  await layout.putBlob({ digest: sha256Digest(config), size: config.length, open: () => [config] });
  await layout.putManifest({
    bytes: manifest,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    tag: 'bench',
  });

  const ours = [];
  const theirs = [];
  // A fresh registry (new port, empty storage) per run: skopeo remembers where it pushed a blob before and
  // would mount it instead of uploading, which would not be the same work.
  for (let i = 0; i < runs; i++) {
    registry?.proc.kill();
    registry = await startRegistry();
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

try {
  await main();
} finally {
  registry?.proc.kill();
  rmSync(work, { recursive: true, force: true });
}
