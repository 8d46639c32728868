// Runs every benchmark in sequence (each prints its own figures and ratios). Not a test.
import { spawnSync } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
let failed = 0;
for (const name of [
  'layer.mjs',
  'push.mjs',
  'detect.mjs',
  'export.mjs',
  'rebase.mjs',
  'rebuild.mjs',
  'executor.mjs',
  'multiarch.mjs',
  'farm.mjs',
  'base.mjs',
  'default-builder.mjs',
]) {
  console.log(`\n=== ${name} ===`);
  const r = spawnSync(process.execPath, [join(here, name)], { stdio: 'inherit' });
  if (r.status !== 0) failed++;
}
process.exitCode = failed === 0 ? 0 : 1;
