import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, symlink } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { execa } from 'execa';
import {
  BUSYBOX_APPLETS,
  type BusyboxRunImage,
  type BusyboxRunImageOptions,
  writeBusyboxRunImage,
} from '../../src/builder/busybox-run-image.js';

/**
 * A real, tiny run image for export/rebase/launch tests: packfarm's busybox run image
 * (src/builder/busybox-run-image.ts, also behind scripts/run-image.mjs) with test defaults. podman can run it on
 * the host architecture (and on others through qemu-user-static when `busyboxPath` is a binary for that
 * architecture).
 */
export interface RunImageOptions extends Omit<BusyboxRunImageOptions, 'createdBy'> {
  /** Default linux/amd64 (not the host's: tests name the platform they check). */
  platform?: NonNullable<BusyboxRunImageOptions['platform']>;
}

export type RunImage = BusyboxRunImage;

export { BUSYBOX_APPLETS };

function requireBusybox(path: string): void {
  if (!existsSync(path)) {
    throw new Error(
      `${path} is missing; run-image tests need a static busybox: apt-get install busybox-static`,
    );
  }
}

export async function createRunImage(opts: RunImageOptions): Promise<RunImage> {
  requireBusybox(opts.busyboxPath ?? '/bin/busybox');
  return writeBusyboxRunImage({
    ...opts,
    platform: opts.platform ?? { os: 'linux', architecture: 'amd64' },
    createdBy: 'packfarm test run image (busybox)',
  });
}

/**
 * Run image version `v` (1, 2, …) for rebase tests: the same busybox layer plus /etc/run-image-version holding
 * `v`, so the two versions differ in their one layer and a container can print which one it runs on.
 */
export function createVersionedRunImage(
  opts: Omit<RunImageOptions, 'extraFiles'> & { version: number },
): Promise<RunImage> {
  const { version, ...rest } = opts;
  return createRunImage({ ...rest, extraFiles: { 'etc/run-image-version': `${version}\n` } });
}

export interface PodmanRunOptions {
  args?: string[];
  entrypoint?: string;
  env?: Record<string, string>;
  /** Extra flags before the image (e.g. ['--platform', 'linux/arm64']). */
  flags?: string[];
}

export interface PodmanRunResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export interface PodmanRunner {
  /**
   * Run an image: a registry reference (pulled over plain HTTP: `--tls-verify=false`) or `oci:DIR[:TAG]` for an
   * OCI layout, pulled through the containers/image `oci:` transport first and then run by image ID.
   */
  run(image: string, opts?: PodmanRunOptions): Promise<PodmanRunResult>;
  /** Any podman command against the private storage. */
  podman(...args: string[]): Promise<PodmanRunResult>;
  cleanup(): Promise<void>;
}

function requirePodman(): void {
  for (const [bin, pkg] of [
    ['/usr/bin/podman', 'podman'],
    ['/usr/sbin/runc', 'runc'],
  ] as const) {
    if (!existsSync(bin)) throw new Error(`${bin} is missing; podman tests need it: apt-get install ${pkg}`);
  }
}

/**
 * podman with its own storage under /tmp for one test file: runs never touch the machine's images and the
 * cleanup removes everything. A private root costs one image pull per test file (a few hundred ms for these
 * small images), which is cheaper than the flakiness of a shared store. The run root sits directly under /tmp
 * because podman refuses run roots longer than 50 characters.
 */
export async function createPodmanRunner(): Promise<PodmanRunner> {
  requirePodman();
  const dir = `/tmp/pfr-${randomBytes(4).toString('hex')}`;
  await mkdir(dir);
  let links = 0;
  const base = [
    '--root',
    join(dir, 'root'),
    '--runroot',
    join(dir, 'run'),
    '--runtime',
    '/usr/sbin/runc',
    '--cgroup-manager',
    'cgroupfs',
    '--events-backend',
    'none',
  ];
  const podman = async (...args: string[]): Promise<PodmanRunResult> => {
    const r = await execa('podman', [...base, ...args], { reject: false, stdin: 'ignore' });
    return { stdout: r.stdout, stderr: r.stderr, exitCode: r.exitCode ?? -1 };
  };
  // podman 4.3's `run` turns an `oci:` path into a (lowercase-only) image name, so a layout is pulled first
  // (`podman pull oci:DIR:TAG` prints the image ID) and run by ID.
  const resolveImage = async (image: string): Promise<string | PodmanRunResult> => {
    if (!image.startsWith('oci:')) return image;
    // The name podman derives from the path must be lowercase: go through a lowercase symlink to the layout.
    const rest = image.slice(4);
    const colon = rest.lastIndexOf(':');
    const [layout, tag] = colon > 0 ? [rest.slice(0, colon), rest.slice(colon + 1)] : [rest, ''];
    const link = join(dir, `layout${links++}`);
    await symlink(resolvePath(layout), link);
    const pulled = await podman('pull', '--quiet', `oci:${link}${tag ? `:${tag}` : ''}`);
    if (pulled.exitCode !== 0) return pulled;
    return pulled.stdout.trim().split('\n').pop() ?? '';
  };
  return {
    podman,
    run: async (image, opts = {}) => {
      const resolved = await resolveImage(image);
      if (typeof resolved !== 'string') return resolved;
      const fromLayout = resolved !== image;
      return podman(
        'run',
        '--rm',
        // No pull progress on stderr: callers check the container's own stderr.
        '--quiet',
        '--ulimit',
        'nofile=20000:20000',
        '--ulimit',
        'nproc=1000:1000',
        '--tls-verify=false',
        // Registry images are pulled again on every run: the same tag is overwritten between runs in tests.
        fromLayout ? '--pull=never' : '--pull=always',
        '--network=none',
        ...(opts.entrypoint !== undefined ? ['--entrypoint', opts.entrypoint] : []),
        ...Object.entries(opts.env ?? {}).flatMap(([k, v]) => ['--env', `${k}=${v}`]),
        ...(opts.flags ?? []),
        resolved,
        ...(opts.args ?? []),
      );
    },
    cleanup: async () => {
      await podman('rmi', '-a', '-f');
      await rm(dir, { recursive: true, force: true }).catch(() =>
        execa('podman', ['unshare', 'rm', '-rf', dir], { reject: false }),
      );
    },
  };
}

/** One-shot convenience: a private runner for a single `podman run`. */
export async function podmanRun(image: string, opts: PodmanRunOptions = {}): Promise<PodmanRunResult> {
  const runner = await createPodmanRunner();
  try {
    return await runner.run(image, opts);
  } finally {
    await runner.cleanup();
  }
}
