// Rebuild benchmark: `packfarm build --publish` of an app whose tree is the ~200 MB bench tree into a real
// docker-registry (behind a byte-counting proxy), then a rebuild with no change, then a rebuild after one app
// file changed. Prints bytes uploaded (target for the no-change rebuild: 0), per-phase times and the
// lifecycle's overhead beyond the buildpacks' own run time, against `tar -cf - . | sha256sum` of the app tree
// (the least any tool must do to learn that nothing changed). Not a test.
//   node bench/rebuild.mjs                  full size
//   BENCH_SCALE=0.1 node bench/rebuild.mjs  quick run
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { fmtMB, fmtS, load, makeTree, putTinyRunImage, setup, startCountingRegistry } from './lib.mjs';

const { scale, work, onExit } = setup('rebuild');
const { build: buildImage } = await load('api/build.js');
const { createRegistryStore } = await load('image/registry-store.js');
const { parseReference } = await load('oci/reference.js');
const { writeLayerFromEntries } = await load('archive/index.js');
const { closeSharedRegistryClients } = await load('registry/index.js');

let registry;
onExit(() => registry?.stop());

// A buildpack that does a little real work each build: a launch layer (a 4 MB runtime), a cache layer, and
// a process. Its output is the same every time, so a rebuild can reuse every layer by diffID.
const bp = join(work, 'buildpack');
mkdirSync(join(bp, 'bin'), { recursive: true });
writeFileSync(
  join(bp, 'buildpack.toml'),
  'api = "0.10"\n[buildpack]\nid = "bench/runtime"\nversion = "1.0.0"\n',
);
writeFileSync(join(bp, 'bin', 'detect'), '#!/bin/sh\nexit 0\n');
writeFileSync(
  join(bp, 'bin', 'build'),
  [
    '#!/bin/sh',
    'set -eu',
    'L="$CNB_LAYERS_DIR"',
    'mkdir -p "$L/runtime/bin" "$L/deps"',
    'head -c 4194304 /dev/zero | tr "\\0" "r" > "$L/runtime/bin/runtime"',
    'chmod 755 "$L/runtime/bin/runtime"',
    'printf "[types]\\nlaunch = true\\n" > "$L/runtime.toml"',
    'echo deps > "$L/deps/lock"',
    'printf "[types]\\ncache = true\\nbuild = true\\n" > "$L/deps.toml"',
    'printf "[[processes]]\\ntype = \\"web\\"\\ncommand = [\\"runtime\\"]\\ndefault = true\\n" > "$L/launch.toml"',
    '',
  ].join('\n'),
);
chmodSync(join(bp, 'bin', 'detect'), 0o755);
chmodSync(join(bp, 'bin', 'build'), 0o755);

const app = join(work, 'app');
const bytes = makeTree(app, scale);
registry = await startCountingRegistry(work);
const runStore = createRegistryStore(parseReference(`${registry.host}/run`), {
  insecureRegistries: [registry.host],
});
await putTinyRunImage(runStore, 'latest', { writeLayerFromEntries });

const image = `${registry.host}/app:bench`;
// One target: the report's only target holds its layers and timings (seconds; fmtS takes ms).
const build = async () => {
  const r = await buildImage(
    {
      image,
      path: app,
      buildpacks: [bp],
      runImage: `${registry.host}/run:latest`,
      publish: true,
      insecureRegistries: [registry.host],
      cacheDir: join(work, 'cache'),
      tmpDir: work,
    },
    { env: { ...process.env, PACKFARM_HOME: join(work, 'home') } },
  );
  const t = r.targets[0];
  return { ...t, timings: Object.fromEntries(Object.entries(t.timings).map(([k, v]) => [k, v * 1000])) };
};

console.log(`packfarm rebuild benchmark — scale ${scale}, node ${process.version}`);
console.log(`app tree: ${fmtMB(bytes)} of content\n`);

const t0 = performance.now();
const h = spawnSync('sh', ['-c', 'tar --sort=name -cf - . | sha256sum'], { cwd: app, stdio: 'ignore' });
if (h.status !== 0) throw new Error('tar | sha256sum failed');
const baseline = performance.now() - t0;

function show(label, r, counts) {
  const t = r.timings;
  const phases = ['analyze', 'detect', 'restore', 'build', 'export', 'cache']
    .map((p) => `${p} ${fmtS(t[p])}`)
    .join(', ');
  const added = r.layers.filter((l) => l.outcome === 'added').map((l) => l.name);
  console.log(`${label}`);
  console.log(
    `  total ${fmtS(t.total)} (buildpacks ${fmtS(t.buildpacks)}, lifecycle overhead ${fmtS(t.total - t.buildpacks)})`,
  );
  console.log(`  phases: ${phases}, prepare ${fmtS(t.prepare)}`);
  console.log(
    `  uploaded ${counts.uploadedBytes} bytes in ${counts.blobUploads} blob(s), ${counts.mounts} mount(s); layers added: ${added.join(', ') || 'none'}`,
  );
}

registry.reset();
const first = await build();
show('first build', first, registry.counts);

registry.reset();
const again = await build();
const noChange = { ...registry.counts };
show('\nrebuild, no change', again, noChange);

writeFileSync(join(app, 'src', 'pkg0', 'mod0', 'file0.js'), `// changed at ${Date.now()}\n`);
registry.reset();
const changed = await build();
show('\nrebuild, one app file changed', changed, registry.counts);
const appLayer = changed.layers.find((l) => l.name === 'app');

console.log('\nsummary');
console.log(
  `  no-change rebuild uploaded bytes:  ${noChange.uploadedBytes}   (target 0)   digest unchanged: ${again.digest === first.digest}`,
);
const overhead = again.timings.total - again.timings.buildpacks;
console.log(
  `  no-change rebuild lifecycle overhead: ${fmtS(overhead)} vs tar|sha256sum of the app ${fmtS(baseline)} = ${(overhead / baseline).toFixed(2)}×`,
);
console.log(
  `  one-file change uploaded ${fmtMB(registry.counts.uploadedBytes)} (app layer ${fmtMB(appLayer?.size ?? 0)} + config)`,
);
await closeSharedRegistryClients?.();
await registry.stop();
