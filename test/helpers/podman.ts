import { mkdtemp, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { execa } from 'execa';

/**
 * A private podman storage for one test file (never the machine's), with the flags podman needs here.
 * The run root lives directly under /tmp because podman refuses run roots longer than 50 characters.
 */
export async function privatePodman(): Promise<{
  podman: (...args: string[]) => Promise<string>;
  cleanup: () => Promise<void>;
}> {
  const dir = await mkdtemp('/tmp/pfp-');
  const base = ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--runtime', '/usr/sbin/runc'];
  return {
    podman: async (...args) => (await execa('podman', [...base, ...args])).stdout,
    cleanup: async () => {
      await execa('podman', [...base, 'rmi', '-a', '-f'], { reject: false });
      // Layers unpacked by podman may be read-only for us; podman's own unshare can remove them.
      await rm(dir, { recursive: true, force: true }).catch(() =>
        execa('podman', ['unshare', 'rm', '-rf', dir], { reject: false }),
      );
    },
  };
}
