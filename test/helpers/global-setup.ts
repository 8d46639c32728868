import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * Integration tests use real tools and the compiled CLI. This checks (and, as root, installs) the tools, and
 * builds dist/ when it is missing, so `vitest run` works on its own as well as through `npm test`.
 */
export default function setup(): void {
  const tools = spawnSync(process.execPath, [join(root, 'scripts', 'ensure-tools.mjs')], {
    stdio: 'inherit',
  });
  if (tools.status !== 0) throw new Error('required system tools are missing (see the message above)');
  if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) {
    const tsc = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
    if (tsc.status !== 0) throw new Error('building dist/ failed');
  }
}
