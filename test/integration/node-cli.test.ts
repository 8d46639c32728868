import { execFileSync } from 'node:child_process';
import { describe, expect, it, vi } from 'vitest';
import { main } from '../../src/cli/main.js';
import type { CliIO } from '../../src/cli/output.js';
import { detectPlatforms } from '../../src/exec/binfmt.js';
import { formatPlatform } from '../../src/oci/platform.js';

/**
 * `packfarm node info` and `packfarm node setup-emulation` against this machine's real kernel registry and
 * runc. The integration setup has registered the qemu handlers the tests need (arm64, ppc64le, s390x, arm).
 */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  let out = '';
  let err = '';
  const io: CliIO = { out: (t) => (out += `${t}\n`), err: (t) => (err += `${t}\n`) };
  const code = await main(args, io);
  return { code, out, err };
}

describe('packfarm node', () => {
  it('info --json reports native and emulated platforms, runc and CPUs as the machine has them', async () => {
    const r = await cli(['node', 'info', '--json']);
    expect(r.code).toBe(0);
    const info = JSON.parse(r.out);
    const machine = await detectPlatforms();
    expect(info.platforms.native).toEqual(machine.native.map(formatPlatform));
    expect(info.platforms.native[0]).toBe(process.arch === 'x64' ? 'linux/amd64' : `linux/${process.arch}`);
    const arm64 = info.platforms.emulated.find((e: { platform: string }) => e.platform === 'linux/arm64');
    expect(arm64).toMatchObject({ fixBinary: true, usableInContainers: true });
    const version = execFileSync('/usr/sbin/runc', ['--version'], { encoding: 'utf8' });
    expect(version).toContain(`runc version ${info.runtime.version}`);
    expect(info.cpus).toBeGreaterThan(0);

    const human = await cli(['node', 'info']);
    expect(human.out).toMatch(/^emulated: .*linux\/arm64 \(qemu-aarch64\)/m);
    expect(human.out).toMatch(/^runtime: +\/usr\/sbin\/runc \S+ \(OCI runtime spec /m);
  });

  it('setup-emulation registers with F once and then finds the handlers present', async () => {
    const r = await cli(['node', 'setup-emulation', '--platform', 'linux/arm64,linux/s390x', '--json']);
    expect(r.code).toBe(0);
    const first = JSON.parse(r.out);
    const names = [...first.registered, ...first.present].map((h: { name: string }) => h.name).sort();
    expect(names).toEqual(['qemu-aarch64', 'qemu-s390x']);
    const again = JSON.parse(
      (await cli(['node', 'setup-emulation', '--platform', 'linux/arm64', '--json'])).out,
    );
    expect(again).toMatchObject({ mounted: false, registered: [], present: [{ name: 'qemu-aarch64' }] });
    const flags = execFileSync('cat', ['/proc/sys/fs/binfmt_misc/qemu-aarch64'], { encoding: 'utf8' });
    expect(flags).toMatch(/^flags: \S*F/m);
  });

  it('setup-emulation says it needs root, and names a platform nothing emulates', async () => {
    const spy = vi.spyOn(process, 'getuid').mockReturnValue(1000);
    try {
      const r = await cli(['node', 'setup-emulation']);
      expect(r.code).toBe(1);
      expect(r.err).toMatch(/needs root/);
      expect(r.err).toMatch(/hint: run it as root: sudo packfarm node setup-emulation/);
    } finally {
      spy.mockRestore();
    }
    const r = await cli(['node', 'setup-emulation', '--platform', 'linux/sparc64']);
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/no qemu-user-static handler .* for linux\/sparc64/);
  });
});
