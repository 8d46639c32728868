// Shared pieces of the benchmarks: the BENCH_* knobs and a scratch directory, loading compiled sources, the
// ~200 MB app tree, a real docker-registry (bare, or with a byte-counting proxy in front), one-layer images
// (a tiny run image among them) and empty build metadata. Benchmarks print figures; they never assert.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { closeSync, mkdirSync, mkdtempSync, openSync, rmSync, writeFileSync, writeSync } from 'node:fs';
import { Agent, createServer, request } from 'node:http';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const MB = 1024 * 1024;
export const dist = process.env.BENCH_DIST ?? join(here, '..', 'dist');

/** Import a compiled module from dist/ (or BENCH_DIST), with a clear message when it was not built. */
export function load(rel) {
  return import(distUrl(rel)).catch((err) => {
    console.error(`cannot load ${join(dist, rel)}: run \`npm run build\` first (${err.message})`);
    process.exit(2);
  });
}

/** The file URL of a compiled module, for a child process that imports it itself. */
export const distUrl = (rel) => pathToFileURL(join(dist, rel)).href;

/**
 * A scratch directory for benchmark `name`, removed at exit after the functions handed to `onExit` ran (in
 * reverse order). SIGINT/SIGTERM exit the same way.
 */
export function scratch(name) {
  const work = mkdtempSync(join(tmpdir(), `packfarm-bench-${name}-`));
  const cleanups = [];
  process.on('exit', () => {
    for (const fn of cleanups.reverse()) fn();
    rmSync(work, { recursive: true, force: true });
  });
  for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));
  return { work, onExit: (fn) => cleanups.push(fn) };
}

/** BENCH_SCALE (default 1) and BENCH_RUNS (default `runs`), checked, and a `scratch` directory. */
export function setup(name, { runs: defaultRuns = 3 } = {}) {
  const scale = Number(process.env.BENCH_SCALE ?? '1');
  const runs = Number.parseInt(process.env.BENCH_RUNS ?? String(defaultRuns), 10);
  if (!(scale > 0)) throw new Error(`BENCH_SCALE must be a positive number, got ${process.env.BENCH_SCALE}`);
  if (!(runs > 0)) throw new Error(`BENCH_RUNS must be a positive integer, got ${process.env.BENCH_RUNS}`);
  return { scale, runs, ...scratch(name) };
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const fmtS = (ms) => `${(ms / 1000).toFixed(2)} s`;
export const fmtMB = (bytes) => `${(bytes / MB).toFixed(1)} MB`;

const WORDS =
  'const let function return import export from async await if else for while class new this value'.split(
    ' ',
  );

/**
 * The benchmark app tree: `smallFiles` compressible text files of 1–8 KiB (~40 MB for 10k) in 1000 nested
 * directories, plus `largeBytes` of random binaries in files of at most `largeFileSize`. The defaults are the
 * ~200 MB tree at `scale` (10k files, 160 MB in 20 MB files at scale 1), so figures of the benchmarks that use
 * them stay comparable. Deterministic text (seeded), random binaries. Returns the content bytes written.
 */
export function makeTree(
  root,
  scale = 1,
  {
    smallFiles = Math.round(10_000 * scale),
    largeBytes = Math.round(160 * MB * scale),
    largeFileSize = 20 * MB,
  } = {},
) {
  let seed = 42;
  const rand = () => {
    seed = (seed * 1103515245 + 12345) & 0x7fffffff;
    return seed / 0x7fffffff;
  };
  const textFile = (bytes) => {
    let s = '';
    while (s.length < bytes) {
      s += `${Array.from({ length: 3 + Math.floor(rand() * 8) }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(' ')};\n`;
    }
    return s.slice(0, bytes);
  };
  let total = 0;
  for (let i = 0; i < smallFiles; i++) {
    const dir = join(root, 'src', `pkg${i % 50}`, `mod${Math.floor(i / 50) % 20}`);
    // The first 1000 files visit every one of the 50 × 20 directories.
    if (i < 1000) mkdirSync(dir, { recursive: true });
    const c = textFile(1024 + Math.floor(rand() * 7 * 1024));
    writeFileSync(join(dir, `file${i}.js`), c);
    total += c.length;
  }
  mkdirSync(join(root, 'bin'), { recursive: true });
  let left = largeBytes;
  for (let i = 0; left > 0; i++) {
    const size = Math.min(largeFileSize, left);
    writeRandomFile(join(root, 'bin', `blob${i}.bin`), size);
    left -= size;
    total += size;
  }
  return total;
}

/** A file of `size` random (incompressible) bytes, written in 16 MiB pieces so it never sits in memory whole. */
export function writeRandomFile(path, size) {
  const fd = openSync(path, 'w');
  try {
    for (let off = 0; off < size; off += 16 * MB) writeSync(fd, randomBytes(Math.min(16 * MB, size - off)));
  } finally {
    closeSync(fd);
  }
}

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

/** A fresh docker-registry (new port, empty storage under `workDir`) on loopback. */
export async function startRegistry(workDir) {
  const port = await freePort();
  const dir = join(workDir, `registry-${port}`);
  mkdirSync(join(dir, 'storage'), { recursive: true });
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/storage\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  const proc = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  for (let i = 0; i < 100; i++) {
    try {
      if ((await fetch(`http://127.0.0.1:${port}/v2/`)).ok)
        return { host: `127.0.0.1:${port}`, port, stop: () => proc.kill() };
    } catch {}
    await new Promise((r) => setTimeout(r, 100));
  }
  proc.kill();
  throw new Error('docker-registry did not start (apt-get install docker-registry)');
}

/**
 * A fresh docker-registry with a pass-through proxy in front that counts what crosses it; `host` is the proxy.
 * Counters: `requests`; `requestBytes` and `responseBytes`, every body byte each way; `uploadedBytes`, request
 * bytes of uploads (all but GET/HEAD); `downloadedBlobBytes`, response bytes of blob GETs; `blobGets`,
 * `blobUploads` (PUTs that finish an upload) and cross-repository `mounts`. `stop()` resolves once closed.
 */
export async function startCountingRegistry(workDir) {
  const registry = await startRegistry(workDir);
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const counts = {
    requests: 0,
    requestBytes: 0,
    responseBytes: 0,
    uploadedBytes: 0,
    downloadedBlobBytes: 0,
    blobUploads: 0,
    blobGets: 0,
    mounts: 0,
  };
  const proxy = createServer((req, res) => {
    counts.requests++;
    const isBlobGet = req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');
    const isUpload = req.method !== 'GET' && req.method !== 'HEAD';
    if (isBlobGet) counts.blobGets++;
    if (req.method === 'POST' && /[?&]mount=/.test(req.url ?? '')) counts.mounts++;
    if (req.method === 'PUT' && /\/blobs\/uploads\//.test(req.url ?? '')) counts.blobUploads++;
    // The proxy keeps its own connections to the registry; the client's connection header is not theirs.
    const headers = { ...req.headers };
    delete headers.connection;
    const up = request(
      { host: '127.0.0.1', port: registry.port, method: req.method, path: req.url, headers, agent },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.on('data', (c) => {
          counts.responseBytes += c.length;
          if (isBlobGet) counts.downloadedBlobBytes += c.length;
        });
        r.pipe(res);
      },
    );
    up.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502);
      res.end(String(err));
    });
    req.on('data', (c) => {
      counts.requestBytes += c.length;
      if (isUpload) counts.uploadedBytes += c.length;
    });
    req.pipe(up);
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  let stopped;
  return {
    host: `127.0.0.1:${proxy.address().port}`,
    counts,
    reset() {
      for (const k of Object.keys(counts)) counts[k] = 0;
    },
    stop() {
      stopped ??= new Promise((resolve) => {
        registry.stop();
        proxy.closeAllConnections();
        proxy.close(() => {
          agent.destroy();
          resolve();
        });
      });
      return stopped;
    },
  };
}

const sha256 = (bytes) => `sha256:${createHash('sha256').update(bytes).digest('hex')}`;

/**
 * A linux/amd64 image of one gzip layer under `tag` in `store`: `layer` is writeLayer's result, `open` streams
 * its blob, `config` is the image config's `config` object. Returns putManifest's result.
 */
export async function putOneLayerImage(store, tag, { layer, open, config = {} }) {
  await store.putBlob({ digest: layer.digest, size: layer.size, open });
  const cfg = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config,
      rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    }),
  );
  const cfgDigest = sha256(cfg);
  await store.putBlob({ digest: cfgDigest, size: cfg.length, open: () => Readable.from([cfg]) });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfgDigest, size: cfg.length },
      layers: [
        { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: layer.digest, size: layer.size },
      ],
    }),
  );
  return store.putManifest({ bytes: manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json', tag });
}

/**
 * A one-layer run image (/etc/os-release plus `extra` files, path → content) for linux/amd64 under `tag` in
 * `store`, labelled rebasable (plus `labels`).
 */
export async function putTinyRunImage(store, tag, { writeLayerFromEntries, extra = {}, labels = {} } = {}) {
  const chunks = [];
  const out = new Writable({
    write(c, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  const entries = [
    { path: 'etc/os-release', type: 'file', content: 'ID=bench\nVERSION_ID=1\n' },
    ...Object.entries(extra).map(([path, content]) => ({ path, type: 'file', content })),
  ];
  const layer = await writeLayerFromEntries(entries, { out });
  const gz = Buffer.concat(chunks);
  return putOneLayerImage(store, tag, {
    layer,
    open: () => Readable.from([gz]),
    config: { User: '1000:1000', Labels: { 'io.buildpacks.rebasable': 'true', ...labels } },
  });
}

/** Build metadata (metadata.toml's content) naming `buildpacks` and nothing else. */
export const buildMetadata = (buildpacks = []) => ({
  buildpacks,
  extensions: [],
  processes: [],
  slices: [],
  labels: [],
  buildpackDefaultProcessType: undefined,
  bom: [],
});
