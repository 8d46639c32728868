// Rebase benchmark: a ~1 GB app image in a real local docker-registry is moved from run image v1 to v2 with
// packfarm's rebase (manifest and config edits, run layer mounted). A small counting proxy in front of the
// registry measures every byte that crosses it. Baseline, measured in the same run: pulling the same app image
// (what a rebase that downloads the image would have to move at least), with packfarm's copy into a layout.
// Not a test: figures are printed against the targets (rebase ≤ 2 s, < 1 MiB through the registry).
//   node bench/rebase.mjs                  full size (~1 GB of app layers)
//   BENCH_SCALE=0.1 node bench/rebase.mjs  quick run
// Environment: BENCH_SCALE (default 1), BENCH_RUNS (rebase runs, default 3), BENCH_DIST (default dist/).
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, openSync, closeSync, writeSync, rmSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, Agent } from 'node:http';
import { createServer } from 'node:net';
import { loadavg, tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = process.env.BENCH_DIST ?? join(here, '..', 'dist');
const load = (rel) =>
  import(pathToFileURL(join(dist, rel)).href).catch((err) => {
    console.error(`cannot load ${join(dist, rel)}: run \`npm run build\` first (${err.message})`);
    process.exit(2);
  });
const { exportImage } = await load('phase/export.js');
const { rebase } = await load('phase/rebase.js');
const { copyImage } = await load('image/copy.js');
const { openLayoutStore } = await load('image/layout-store.js');
const { createRegistryStore } = await load('image/registry-store.js');
const { writeLayerFromEntries } = await load('archive/index.js');
const { sha256Digest } = await load('oci/digest.js');
const { parseReference } = await load('oci/reference.js');
const { closeSharedRegistryClients } = await load('registry/index.js');

const scale = Number(process.env.BENCH_SCALE ?? '1');
const runs = Math.max(1, Number.parseInt(process.env.BENCH_RUNS ?? '3', 10));
if (!(scale > 0)) throw new Error(`BENCH_SCALE must be a positive number, got ${process.env.BENCH_SCALE}`);
const MiB = 1024 * 1024;
const work = mkdtempSync(join(tmpdir(), 'packfarm-bench-rebase-'));
let registryProc;
process.on('exit', () => {
  registryProc?.kill();
  rmSync(work, { recursive: true, force: true });
});
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

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
  const dir = join(work, 'registry');
  mkdirSync(join(dir, 'storage'), { recursive: true });
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/storage\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  registryProc = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      const res = await fetch(`http://127.0.0.1:${port}/v2/`);
      if (res.ok) return port;
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error('docker-registry did not start (apt-get install docker-registry)');
}

/** A pass-through HTTP proxy to the registry that counts request and response body bytes and blob GETs. */
async function startCountingProxy(targetPort) {
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const stats = { requests: 0, bytesIn: 0, bytesOut: 0, blobGets: 0, mounts: 0, uploads: 0 };
  const server = createHttpServer((req, res) => {
    stats.requests++;
    if (req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '')) stats.blobGets++;
    if (req.method === 'POST' && /\/blobs\/uploads\/\?.*mount=/.test(req.url ?? '')) stats.mounts++;
    if (req.method === 'PUT' && /\/blobs\/uploads\//.test(req.url ?? '')) stats.uploads++;
    const headers = { ...req.headers };
    delete headers.connection;
    const up = httpRequest(
      { host: '127.0.0.1', port: targetPort, method: req.method, path: req.url, headers, agent },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.on('data', (c) => {
          stats.bytesOut += c.length;
        });
        r.pipe(res);
      },
    );
    up.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(err));
    });
    req.on('data', (c) => {
      stats.bytesIn += c.length;
    });
    req.pipe(up);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    host: `127.0.0.1:${server.address().port}`,
    stats,
    reset() {
      for (const k of Object.keys(stats)) stats[k] = 0;
    },
    close: () =>
      new Promise((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          agent.destroy();
          resolve();
        });
      }),
  };
}

/** A tiny run image: one layer holding /etc/run-image-version, base labels as a run image has them. */
async function pushRunImage(store, version) {
  const out = join(work, `run-v${version}.tgz`);
  const layer = await writeLayerFromEntries(
    [
      { path: 'etc', type: 'dir', mode: 0o755 },
      { path: 'etc/run-image-version', type: 'file', mode: 0o644, content: Buffer.from(`${version}\n`) },
    ],
    { out },
  );
  const { createReadStream } = await import('node:fs');
  await store.putBlob({ digest: layer.digest, size: layer.size, open: () => createReadStream(out) });
  const config = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {
        Env: ['PATH=/bin'],
        Labels: {
          'io.buildpacks.base.distro.name': 'bench',
          'io.buildpacks.base.distro.version': '1',
          'io.buildpacks.rebasable': 'true',
        },
      },
      rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    }),
  );
  await store.putBlob({
    digest: sha256Digest(config),
    size: config.length,
    open: () => Readable.from([config]),
  });
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
  await store.putManifest({
    bytes: manifest,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    tag: `v${version}`,
  });
}

/** Build output with `layers` launch layers of random (incompressible) data, ~1 GB in all at scale 1. */
function makeBuildOutput(root) {
  const layersDir = join(root, 'layers');
  const appDir = join(root, 'workspace');
  mkdirSync(appDir, { recursive: true });
  writeFileSync(join(appDir, 'app.txt'), 'app\n');
  const layerCount = 4;
  const perLayer = Math.max(1, Math.round((1024 * scale) / layerCount)) * MiB;
  const chunk = 4 * MiB;
  for (let i = 0; i < layerCount; i++) {
    const dir = join(layersDir, 'bench_app', `dep${i}`);
    mkdirSync(dir, { recursive: true });
    writeFileSync(join(layersDir, 'bench_app', `dep${i}.toml`), '[types]\nlaunch = true\n');
    const fd = openSync(join(dir, 'blob.bin'), 'w');
    for (let n = 0; n < perLayer; n += chunk) writeSync(fd, randomBytes(Math.min(chunk, perLayer - n)));
    closeSync(fd);
  }
  return { layersDir, appDir };
}

function median(xs) {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

async function main() {
  const registryPort = await startRegistry();
  const proxy = await startCountingProxy(registryPort);
  const host = proxy.host;
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
    metadata: {
      buildpacks: [{ id: 'bench/app', version: '1.0.0', api: '0.10' }],
      extensions: [],
      processes: [],
      slices: [],
      labels: [],
      buildpackDefaultProcessType: undefined,
      bom: [],
    },
    runImage: { store: run, target: 'v1', name: `${host}/run:v1` },
    platform: { os: 'linux', architecture: 'amd64' },
    outputs: [{ store: app, tags: ['v1'] }],
    concurrency: 2,
  });
  const exportSeconds = (performance.now() - t) / 1000;
  const appBytes = exported.layers.reduce((n, l) => n + l.size, 0);

  // Baseline: what a pull of the app image moves (the least a download-based rebase would move).
  proxy.reset();
  const pulled = await openLayoutStore(join(work, 'pulled'), { create: true });
  t = performance.now();
  await copyImage({ src: app, srcTarget: 'v1', dst: pulled, dstTag: 'v1' });
  const pullSeconds = (performance.now() - t) / 1000;
  const pullBytes = proxy.stats.bytesIn + proxy.stats.bytesOut;
  rmSync(join(work, 'pulled'), { recursive: true, force: true });

  // Each run rebases the v1 image in a repository of its own (filled by mounting, untimed), so every run mounts
  // the new run layer and uploads a new config: the same work as the first rebase of a real image.
  const times = [];
  const moved = [];
  let last;
  for (let i = 0; i < runs; i++) {
    const repo = storeFor(`app-${i}`);
    await copyImage({ src: app, srcTarget: 'v1', dst: repo, dstTag: 'latest' });
    proxy.reset();
    t = performance.now();
    last = await rebase({
      source: { store: repo, target: 'latest' },
      runImage: { store: run, target: 'v2', name: `${host}/run:v2` },
    });
    times.push((performance.now() - t) / 1000);
    moved.push({ ...proxy.stats });
  }
  await closeSharedRegistryClients();
  await proxy.close();
  registryProc.kill();

  const secs = median(times);
  const bytes = median(moved.map((x) => x.bytesIn + x.bytesOut));
  const m = moved.find((x) => x.bytesIn + x.bytesOut === bytes);
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
    `bytes through the registry               ${(bytes / 1024).toFixed(1)} KiB (${bytes} B: ${m.bytesIn} B up, ${m.bytesOut} B down; ${m.requests} requests, ${m.blobGets} blob GETs, ${m.mounts} mounts, ${m.uploads} uploads)`,
  );
  console.log(
    `result: ${last.digest}, ${last.images[0].baseLayers.removed} run layer(s) swapped, ${last.images[0].appLayers} app layers kept`,
  );
  console.log(
    `targets: time ${secs <= 2 ? 'met' : 'MISSED'} (${secs.toFixed(3)} s ≤ 2 s), bytes ${bytes < MiB ? 'met' : 'MISSED'} (${(bytes / 1024).toFixed(1)} KiB < 1 MiB); vs pull: ${(pullSeconds / secs).toFixed(0)}× faster, ${(pullBytes / bytes).toFixed(0)}× fewer bytes`,
  );
}

main().catch((err) => {
  console.error(err);
  process.exitCode = 1;
});
