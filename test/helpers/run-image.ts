import { existsSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, symlink } from 'node:fs/promises';
import { join, resolve as resolvePath } from 'node:path';
import { Readable, Writable } from 'node:stream';
import { execa } from 'execa';
import { type MemoryEntry, writeLayerFromEntries } from '../../src/archive/index.js';
import type { ImageStore } from '../../src/image/store.js';
import { type Digest, sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { type Platform, platformToSpec } from '../../src/oci/platform.js';
import { canonicalJson } from '../../src/util/json.js';

/**
 * A real, tiny run image for export/rebase/launch tests: one layer with a static busybox as /bin/busybox and
 * its applets as symlinks in /bin, /etc/passwd and /etc/group with a `cnb` user, and a sticky /tmp. podman can
 * run it on the host architecture (and on others through qemu-user-static when `busyboxPath` is a binary for
 * that architecture).
 */
export interface RunImageOptions {
  store: ImageStore;
  tag: string;
  /** Default linux/amd64. */
  platform?: Platform;
  /** A statically linked busybox for `platform` (default /bin/busybox from Debian's busybox-static). */
  busyboxPath?: string;
  /** Added to the io.buildpacks.base.* labels (which callers may override). */
  labels?: Record<string, string>;
  /** Config User (default '1000:1000'). */
  user?: string;
  /** Extra files in the layer: path (no leading /) → content. Use it to tell v1 from v2 (see runImageVersion). */
  extraFiles?: Record<string, string>;
  /** Extra config Env entries after PATH. */
  env?: string[];
  /** Leave /bin/sh out (a run image without a shell). */
  noShell?: boolean;
  /** Docker media types instead of OCI. */
  docker?: boolean;
}

export interface RunImage {
  digest: Digest;
  manifestBytes: Buffer;
  mediaType: string;
  size: number;
  platform: Platform;
  config: { digest: Digest; bytes: Buffer; value: Record<string, unknown> };
  layers: Array<{ digest: Digest; size: number; diffId: Digest }>;
}

export const BUSYBOX_APPLETS = [
  'sh',
  'echo',
  'cat',
  'env',
  'ls',
  'id',
  'sleep',
  'true',
  'false',
  'pwd',
  'test',
  '[',
  'mkdir',
  'rm',
  'cp',
  'mv',
  'chmod',
  'grep',
  'sed',
  'head',
  'tail',
  'wc',
  'sort',
  'tr',
  'basename',
  'dirname',
  'readlink',
  'uname',
  'whoami',
  'date',
  'touch',
  'find',
  'xargs',
  'expr',
  'mktemp',
];

const CREATED = '1980-01-01T00:00:01Z';

function requireBusybox(path: string): void {
  if (!existsSync(path)) {
    throw new Error(
      `${path} is missing; run-image tests need a static busybox: apt-get install busybox-static`,
    );
  }
}

function collect(): { stream: Writable; bytes: () => Buffer } {
  const chunks: Buffer[] = [];
  const stream = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  return { stream, bytes: () => Buffer.concat(chunks) };
}

export async function createRunImage(opts: RunImageOptions): Promise<RunImage> {
  const busyboxPath = opts.busyboxPath ?? '/bin/busybox';
  requireBusybox(busyboxPath);
  const platform = opts.platform ?? { os: 'linux', architecture: 'amd64' };
  const user = opts.user ?? '1000:1000';
  const entries: MemoryEntry[] = [
    { path: 'bin', type: 'dir', mode: 0o755 },
    { path: 'bin/busybox', type: 'file', mode: 0o755, content: await readFile(busyboxPath) },
    { path: 'etc', type: 'dir', mode: 0o755 },
    {
      path: 'etc/passwd',
      type: 'file',
      content: 'root:x:0:0:root:/root:/bin/sh\ncnb:x:1000:1000:cnb:/home/cnb:/bin/sh\n',
    },
    { path: 'etc/group', type: 'file', content: 'root:x:0:\ncnb:x:1000:\n' },
    { path: 'home/cnb', type: 'dir', mode: 0o755, uid: 1000, gid: 1000 },
    { path: 'root', type: 'dir', mode: 0o700 },
    { path: 'tmp', type: 'dir', mode: 0o1777 },
    { path: 'usr/bin', type: 'dir', mode: 0o755 },
    { path: 'usr/local/bin', type: 'dir', mode: 0o755 },
  ];
  for (const applet of BUSYBOX_APPLETS) {
    if (opts.noShell && applet === 'sh') continue;
    entries.push({ path: `bin/${applet}`, type: 'symlink', linkname: 'busybox' });
  }
  for (const [path, content] of Object.entries(opts.extraFiles ?? {})) {
    entries.push({ path, type: 'file', content });
  }
  const out = collect();
  const layer = await writeLayerFromEntries(entries, { out: out.stream, gzipLevel: 6 });
  const gz = out.bytes();

  const labels = {
    'io.buildpacks.base.distro.name': 'busybox',
    'io.buildpacks.base.distro.version': '1',
    ...(opts.labels ?? {}),
  };
  const config = {
    ...platformToSpec(platform),
    created: CREATED,
    config: {
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', ...(opts.env ?? [])],
      User: user,
      Labels: labels,
    },
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [{ created: CREATED, created_by: 'packfarm test run image (busybox)' }],
  };
  const cfgBytes = Buffer.from(canonicalJson(config));
  const cfgDigest = sha256Digest(cfgBytes);
  await opts.store.putBlob({
    digest: layer.digest,
    size: layer.size,
    open: () => Readable.from([gz]),
  });
  await opts.store.putBlob({
    digest: cfgDigest,
    size: cfgBytes.length,
    open: () => Readable.from([cfgBytes]),
  });
  const mediaType = opts.docker ? MediaType.dockerManifest : MediaType.ociManifest;
  const manifest = {
    schemaVersion: 2,
    mediaType,
    config: {
      mediaType: opts.docker ? MediaType.dockerConfig : MediaType.ociConfig,
      digest: cfgDigest,
      size: cfgBytes.length,
    },
    layers: [
      {
        mediaType: opts.docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip,
        digest: layer.digest,
        size: layer.size,
      },
    ],
  };
  const manifestBytes = Buffer.from(canonicalJson(manifest));
  const digest = await opts.store.putManifest({ bytes: manifestBytes, mediaType, tag: opts.tag });
  return {
    digest,
    manifestBytes,
    mediaType,
    size: manifestBytes.length,
    platform,
    config: { digest: cfgDigest, bytes: cfgBytes, value: config },
    layers: [{ digest: layer.digest, size: layer.size, diffId: layer.diffId }],
  };
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
