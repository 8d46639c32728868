import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { Readable, Writable } from 'node:stream';
import { type MemoryEntry, writeLayerFromEntries } from '../archive/index.js';
import type { ImageStore } from '../image/store.js';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { type Platform, hostPlatform, platformToSpec } from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';
import { canonicalJson } from '../util/json.js';

/**
 * The smallest run image a shell app can start on: one layer holding a statically linked busybox (Debian's
 * `busybox-static` package installs one as /bin/busybox) with its applets as symlinks in /bin, /etc/passwd and
 * /etc/group with the `cnb` user (1000:1000), and a sticky /tmp. It exists so the quick start and the tests can
 * build and run an app image without pulling a base image from the internet; it is not a production base.
 * The layer and config are deterministic: the same busybox binary gives the same digests.
 */
export interface BusyboxRunImageOptions {
  store: ImageStore;
  tag: string;
  /** Default: the host's platform. The busybox binary must be built for it (podman runs a foreign one via qemu). */
  platform?: Platform;
  /** A statically linked busybox for `platform` (default /bin/busybox). */
  busyboxPath?: string;
  /** Merged over the default io.buildpacks.base.distro.* labels. */
  labels?: Record<string, string>;
  /** Config User (default '1000:1000'). */
  user?: string;
  /** Extra files in the layer: path (no leading /) → content. */
  extraFiles?: Record<string, string>;
  /** Extra config Env entries after PATH. */
  env?: string[];
  /** Leave /bin/sh out (a run image without a shell). */
  noShell?: boolean;
  /** Docker v2 media types instead of OCI. */
  docker?: boolean;
  /** The history entry's created_by (says who made the image). */
  createdBy?: string;
}

export interface BusyboxRunImage {
  digest: Digest;
  manifestBytes: Buffer;
  mediaType: string;
  size: number;
  platform: Platform;
  config: { digest: Digest; bytes: Buffer; value: Record<string, unknown> };
  layers: Array<{ digest: Digest; size: number; diffId: Digest }>;
}

/** The applets linked into /bin: what shell scripts, buildpack launchers and tests commonly call. */
export const BUSYBOX_APPLETS: readonly string[] = [
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

export const DEFAULT_BUSYBOX_PATH = '/bin/busybox';

// REPRODUCIBLE_EPOCH as the image config has always spelt it (no milliseconds): the digest depends on it.
const CREATED = '1980-01-01T00:00:01Z';

/** The layer's entries, in any order (the layer writer sorts them). */
export function busyboxRootfsEntries(
  busybox: Buffer,
  opts: Pick<BusyboxRunImageOptions, 'extraFiles' | 'noShell'> = {},
): MemoryEntry[] {
  const entries: MemoryEntry[] = [
    { path: 'bin', type: 'dir', mode: 0o755 },
    { path: 'bin/busybox', type: 'file', mode: 0o755, content: busybox },
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
  return entries;
}

/** Write the image (layer, config, manifest under `tag`) into `store`. */
export async function writeBusyboxRunImage(opts: BusyboxRunImageOptions): Promise<BusyboxRunImage> {
  const busyboxPath = opts.busyboxPath ?? DEFAULT_BUSYBOX_PATH;
  if (!existsSync(busyboxPath)) {
    throw new PackfarmError(
      'BUSYBOX_MISSING',
      `${busyboxPath} is missing: the run image needs a statically linked busybox there`,
      { hint: 'install it with: apt-get install busybox-static' },
    );
  }
  const platform = opts.platform ?? hostPlatform();
  const entries = busyboxRootfsEntries(await readFile(busyboxPath), opts);
  // The layer is one ~2 MB binary plus a few small files: holding its ~1 MB of gzip in memory is cheaper than
  // a temp file, and lets putBlob reopen it.
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      chunks.push(chunk);
      cb();
    },
  });
  const layer = await writeLayerFromEntries(entries, { out: sink, gzipLevel: 6 });
  const gz = Buffer.concat(chunks);

  const config = {
    ...platformToSpec(platform),
    created: CREATED,
    config: {
      Env: ['PATH=/usr/local/bin:/usr/bin:/bin', ...(opts.env ?? [])],
      User: opts.user ?? '1000:1000',
      Labels: {
        'io.buildpacks.base.distro.name': 'busybox',
        'io.buildpacks.base.distro.version': '1',
        ...(opts.labels ?? {}),
      },
    },
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [{ created: CREATED, created_by: opts.createdBy ?? 'packfarm busybox run image' }],
  };
  const cfgBytes = Buffer.from(canonicalJson(config));
  const cfgDigest = sha256Digest(cfgBytes);
  await opts.store.putBlob({ digest: layer.digest, size: layer.size, open: () => Readable.from([gz]) });
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
