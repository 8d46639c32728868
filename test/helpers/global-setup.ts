import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { detectPlatforms, howToRun } from '../../src/exec/binfmt.js';
import { setupEmulation } from '../../src/exec/emulation.js';
import { formatPlatform, type Platform } from '../../src/oci/platform.js';

const root = join(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** Foreign platforms the multi-arch tests build for; their binaries run through qemu-user-static. */
export const EMULATED_TEST_PLATFORMS: Platform[] = [
  { os: 'linux', architecture: 'arm64' },
  { os: 'linux', architecture: 'ppc64le' },
  { os: 'linux', architecture: 's390x' },
  { os: 'linux', architecture: 'arm', variant: 'v7' },
];

/**
 * Integration tests use real tools and the compiled CLI. This checks (and, as root, installs) the tools,
 * registers the qemu binfmt_misc handlers (with the F flag) so foreign build images run in containers on a
 * fresh machine, and builds dist/ when it is missing, so `vitest run` works on its own as well as through
 * `npm test`.
 */
export default async function setup(): Promise<void> {
  const tools = spawnSync(process.execPath, [join(root, 'scripts', 'ensure-tools.mjs')], {
    stdio: 'inherit',
  });
  if (tools.status !== 0) throw new Error('required system tools are missing (see the message above)');
  await ensureEmulation();
  if (!existsSync(join(root, 'dist', 'cli', 'main.js'))) {
    const tsc = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: root, stdio: 'inherit' });
    if (tsc.status !== 0) throw new Error('building dist/ failed');
  }
}

async function ensureEmulation(): Promise<void> {
  const missing = async () => {
    const machine = await detectPlatforms();
    return EMULATED_TEST_PLATFORMS.filter((p) => !howToRun(machine, p));
  };
  const before = await missing();
  if (before.length === 0) return;
  if (process.getuid?.() === 0) {
    const r = await setupEmulation({ platforms: before });
    for (const h of r.registered)
      console.error(
        `registered binfmt_misc handler ${h.name} (${formatPlatform(h.platform)}, flags ${h.flags})`,
      );
  }
  const after = await missing();
  if (after.length > 0)
    throw new Error(
      `the tests run ${after.map(formatPlatform).join(', ')} binaries through qemu binfmt_misc handlers with the F flag; ` +
        'run as root: apt-get install qemu-user-static && packfarm node setup-emulation',
    );
}
