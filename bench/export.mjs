// Export benchmark: packfarm's exportImage of an app whose tree is ~200 MB onto a tiny run image, into an OCI
// layout, against `tar --sort=name -cf - . | gzip -1` of the same tree; then a no-change re-export (bytes
// written to the store must be 0). Run after `npx tsc -p tsconfig.build.json`:
//   node bench/export.mjs                 full size (~200 MB tree, ~10k files)
//   BENCH_SCALE=0.1 node bench/export.mjs quick run
// Environment: BENCH_SCALE (default 1), BENCH_RUNS (default 3), BENCH_DIST (compiled sources, default dist/).
// Figures are printed, never asserted: this is not a test. Target: export ≤ 1.2 × tar|gzip wall time.
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = process.env.BENCH_DIST ?? join(here, '..', 'dist');
const load = (rel) =>
  import(pathToFileURL(join(dist, rel)).href).catch((err) => {
    console.error(
      `cannot load ${join(dist, rel)}: run \`npx tsc -p tsconfig.build.json\` first (${err.message})`,
    );
    process.exit(2);
  });
const { exportImage } = await load('phase/export.js');
const { openLayoutStore } = await load('image/layout-store.js');
const { writeLayerFromEntries } = await load('archive/index.js');
const { writeBuildMetadata, buildMetadataPath } = await load('platform/metadata.js');

const scale = Number(process.env.BENCH_SCALE ?? '1');
const runs = Math.max(1, Number.parseInt(process.env.BENCH_RUNS ?? '3', 10));
if (!(scale > 0)) throw new Error(`BENCH_SCALE must be a positive number, got ${process.env.BENCH_SCALE}`);
const MB = 1024 * 1024;
const work = mkdtempSync(join(tmpdir(), 'packfarm-bench-export-'));
process.on('exit', () => rmSync(work, { recursive: true, force: true }));
for (const sig of ['SIGINT', 'SIGTERM']) process.on(sig, () => process.exit(130));

// The same shape as bench/layer.mjs's tree: ~10k compressible text files plus ~160 MB of random binaries.
const WORDS =
  'const let function return import export from async await if else for while class new this value'.split(
    ' ',
  );
let seed = 42;
const rand = () => {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed / 0x7fffffff;
};
function textFile(bytes) {
  let s = '';
  while (s.length < bytes) {
    s += `${Array.from({ length: 3 + Math.floor(rand() * 8) }, () => WORDS[Math.floor(rand() * WORDS.length)]).join(' ')};\n`;
  }
  return s.slice(0, bytes);
}
function makeTree(root) {
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

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const fmt = (ms) => `${(ms / 1000).toFixed(2)} s`;

const app = join(work, 'app');
const layers = join(work, 'layers');
mkdirSync(layers, { recursive: true });
const bytes = makeTree(app);
await writeBuildMetadata(
  buildMetadataPath(layers),
  {
    buildpacks: [],
    extensions: [],
    processes: [],
    slices: [],
    labels: [],
    buildpackDefaultProcessType: undefined,
    bom: [],
  },
  '0.15',
);

// A one-file run image in its own layout.
const runStore = await openLayoutStore(join(work, 'run'), { create: true });
{
  const { Readable, Writable } = await import('node:stream');
  const chunks = [];
  const out = new Writable({
    write(c, _e, cb) {
      chunks.push(c);
      cb();
    },
  });
  const l = await writeLayerFromEntries([{ path: 'etc/os-release', type: 'file', content: 'ID=bench\n' }], {
    out,
  });
  const gz = Buffer.concat(chunks);
  await runStore.putBlob({ digest: l.digest, size: l.size, open: () => Readable.from([gz]) });
  const cfg = Buffer.from(
    JSON.stringify({
      architecture: 'amd64',
      os: 'linux',
      config: {},
      rootfs: { type: 'layers', diff_ids: [l.diffId] },
    }),
  );
  const { createHash } = await import('node:crypto');
  const cfgDigest = `sha256:${createHash('sha256').update(cfg).digest('hex')}`;
  await runStore.putBlob({ digest: cfgDigest, size: cfg.length, open: () => Readable.from([cfg]) });
  const manifest = Buffer.from(
    JSON.stringify({
      schemaVersion: 2,
      mediaType: 'application/vnd.oci.image.manifest.v1+json',
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: cfgDigest, size: cfg.length },
      layers: [{ mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: l.digest, size: l.size }],
    }),
  );
  await runStore.putManifest({
    bytes: manifest,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    tag: 'run',
  });
}

console.log(`packfarm export benchmark — scale ${scale}, ${runs} run(s) per figure, node ${process.version}`);
console.log(`app tree: ${(bytes / MB).toFixed(1)} MB of content\n`);

const exportOnce = async (dir) => {
  const store = await openLayoutStore(dir, { create: true });
  const t0 = process.hrtime.bigint();
  const r = await exportImage({
    layersDir: layers,
    appDir: app,
    group: { group: [] },
    runImage: { store: runStore, target: 'run' },
    outputs: [{ store, tags: ['app'] }],
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
console.log(`export (fresh layout)      ${fmt(o)}   digest ${digest}`);
console.log(`tar --sort=name | gzip -1  ${fmt(b)}`);
console.log(`ratio                      ${(o / b).toFixed(2)}× (target ≤ 1.2×)\n`);

// No-change re-export into the same layout: every layer exists already, nothing is written to the store.
const same = join(work, 'same');
await exportOnce(same);
const again = await exportOnce(same);
const added = again.r.layers.filter((l) => l.outcome !== 'reused');
const addedBytes = added.reduce((n, l) => n + l.size, 0);
console.log(
  `no-change re-export        ${fmt(again.ms)}   layers written to the store: ${added.length} (${addedBytes} bytes; target 0)`,
);
