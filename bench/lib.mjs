// Shared pieces of the benchmarks: loading compiled sources, the ~200 MB app tree, a real docker-registry with
// a byte-counting proxy in front, and a one-file run image. Benchmarks print figures; they never assert.
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import { createServer, request } from 'node:http';
import { dirname, join } from 'node:path';
import { Readable } from 'node:stream';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
export const MB = 1024 * 1024;
export const dist = process.env.BENCH_DIST ?? join(here, '..', 'dist');

/** Import a compiled module from dist/ (or BENCH_DIST), with a clear message when it was not built. */
export function load(rel) {
  return import(pathToFileURL(join(dist, rel)).href).catch((err) => {
    console.error(`cannot load ${join(dist, rel)}: run \`npm run build\` first (${err.message})`);
    process.exit(2);
  });
}

export const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
export const fmtS = (ms) => `${(ms / 1000).toFixed(2)} s`;
export const fmtMB = (bytes) => `${(bytes / MB).toFixed(1)} MB`;

const WORDS =
  'const let function return import export from async await if else for while class new this value'.split(
    ' ',
  );

/**
 * The benchmark app tree: ~10k compressible text files (~40 MB) plus ~160 MB of random binaries at scale 1.
 * Deterministic text (seeded), random binaries. Returns the content bytes written.
 */
export function makeTree(root, scale = 1) {
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
  const small = Math.round(10_000 * scale);
  for (let i = 0; i < small; i++) {
    const dir = join(root, 'src', `pkg${i % 50}`, `mod${Math.floor(i / 50) % 20}`);
    mkdirSync(dir, { recursive: true });
    const c = textFile(1024 + Math.floor(rand() * 7 * 1024));
    writeFileSync(join(dir, `file${i}.js`), c);
    total += c.length;
  }
  mkdirSync(join(root, 'bin'), { recursive: true });
  let left = Math.round(160 * MB * scale);
  for (let i = 0; left > 0; i++) {
    const size = Math.min(20 * MB, left);
    writeFileSync(join(root, 'bin', `blob${i}.bin`), randomBytes(size));
    left -= size;
    total += size;
  }
  return total;
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

/**
 * A fresh docker-registry on loopback with a proxy in front that counts what crosses it: request bytes of
 * uploads (PUT/PATCH/POST bodies) and response bytes of blob GETs. `host` is the proxy.
 */
export async function startCountingRegistry(workDir) {
  const port = await freePort();
  const dir = join(workDir, `registry-${port}`);
  mkdirSync(join(dir, 'storage'), { recursive: true });
  const config = join(dir, 'config.yml');
  writeFileSync(
    config,
    `version: 0.1\nlog:\n  level: error\nstorage:\n  filesystem:\n    rootdirectory: ${dir}/storage\n  delete:\n    enabled: true\nhttp:\n  addr: 127.0.0.1:${port}\n`,
  );
  const proc = spawn('docker-registry', ['serve', config], { stdio: 'ignore' });
  let up = false;
  for (let i = 0; i < 100 && !up; i++) {
    try {
      up = (await fetch(`http://127.0.0.1:${port}/v2/`)).ok;
    } catch {}
    if (!up) await new Promise((r) => setTimeout(r, 100));
  }
  if (!up) {
    proc.kill();
    throw new Error('docker-registry did not start (apt-get install docker-registry)');
  }
  const counts = {
    uploadedBytes: 0,
    downloadedBlobBytes: 0,
    blobUploads: 0,
    blobGets: 0,
    mounts: 0,
    requests: 0,
  };
  const proxy = createServer((req, res) => {
    counts.requests++;
    const isBlobGet = req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');
    if (isBlobGet) counts.blobGets++;
    if (req.method === 'POST' && /[?&]mount=/.test(req.url ?? '')) counts.mounts++;
    if (req.method === 'PUT' && /\/blobs\/uploads\//.test(req.url ?? '')) counts.blobUploads++;
    const up = request(
      { host: '127.0.0.1', port, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.on('data', (c) => {
          if (isBlobGet) counts.downloadedBlobBytes += c.length;
        });
        r.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.on('data', (c) => {
      if (req.method !== 'GET' && req.method !== 'HEAD') counts.uploadedBytes += c.length;
    });
    req.pipe(up);
  });
  await new Promise((r) => proxy.listen(0, '127.0.0.1', r));
  const host = `127.0.0.1:${proxy.address().port}`;
  return {
    host,
    counts,
    reset() {
      for (const k of Object.keys(counts)) counts[k] = 0;
    },
    stop() {
      proxy.close();
      proc.kill();
    },
  };
}

/** A one-layer run image (just /etc/os-release) for linux/amd64 under `tag` in `store`. */
export async function putTinyRunImage(store, tag, { writeLayerFromEntries, extra = {} } = {}) {
  const { Writable } = await import('node:stream');
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
  const l = await writeLayerFromEntries(entries, { out });
  const gz = Buffer.concat(chunks);
  await store.putBlob({ digest: l.digest, size: l.size, open: () => Readable.from([gz]) });
  const cfg = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: { User: '1000:1000', Labels: { 'io.buildpacks.rebasable': 'true' } },
      rootfs: { type: 'layers', diff_ids: [l.diffId] },
    }),
  );
  const cfgDigest = `sha256:${createHash('sha256').update(cfg).digest('hex')}`;
  await store.putBlob({ digest: cfgDigest, size: cfg.length, open: () => Readable.from([cfg]) });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfgDigest, size: cfg.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size }],
    }),
  );
  return store.putManifest({ bytes: manifest, mediaType: 'application/vnd.oci.image.manifest.v1+json', tag });
}
