import { createReadStream } from 'node:fs';
import { mkdir, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { writeLayerFromEntries } from '../../archive/index.js';
import { publishIndex } from '../../image/publish-index.js';
import { packfarmDataDir } from '../../image/data-dir.js';
import type { RegistryOptions } from '../../image/registry-store.js';
import type { ImageStore } from '../../image/store.js';
import { openImage } from '../../image/transport.js';
import { type Digest, sha256Digest } from '../../oci/digest.js';
import { MediaType } from '../../oci/media-types.js';
import { type Platform, formatPlatform, platformToSpec } from '../../oci/platform.js';
import { PackfarmError } from '../../util/errors.js';
import { canonicalJson } from '../../util/json.js';
import { makeTempDir, sweepOldEntries } from '../../util/tempdir.js';
import { REPRODUCIBLE_EPOCH } from '../../util/time.js';
import {
  type AptTarget,
  type ResolvedPackage,
  downloadPackages,
  resolvePackages,
  updateLists,
} from './apt.js';
import { configureRootfs } from './configure.js';
import type { BaseArch, BaseDefinition, ImageDefinition } from './definition.js';
import { addPackage, createRootfs, rootfsEntries } from './rootfs.js';

/**
 * `packfarm base create`: a build image and a run image for every architecture of a base definition, each
 * kind published as one image index (children sorted by platform, pushed by digest, the tag written last).
 *
 * Per architecture and kind: resolve the package set with apt (apt.ts), fetch the .debs (cached), unpack
 * them into an entry table (rootfs.ts), do what the maintainer scripts would have done (configure.ts), write
 * the table as one deterministic layer, then the config and the manifest. The same package versions give
 * the same layer, config, manifest and index digests.
 */

export type BaseImageKind = 'build' | 'run';

export type BaseEvent =
  | { type: 'progress'; arch: string; kind?: BaseImageKind; message: string }
  | { type: 'handled'; arch: string; kind: BaseImageKind; package: string; how: string }
  | { type: 'warning'; arch: string; kind?: BaseImageKind; package?: string; message: string }
  | {
      type: 'image';
      arch: string;
      kind: BaseImageKind;
      platform: string;
      digest: Digest;
      packages: number;
      layerSize: number;
    }
  | { type: 'index'; kind: BaseImageKind; reference: string; digest: Digest };

export interface CreateBaseImagesOptions {
  definition: BaseDefinition;
  /** Where the build image index goes: a registry reference or oci:DIR[:TAG]. Default: definition.build.tag. */
  buildTag?: string;
  runTag?: string;
  /** Default: PACKFARM_HOME / XDG data dir (apt state and the .deb cache live under <dataDir>/base). */
  dataDir?: string;
  insecureRegistries?: string[];
  registry?: Partial<RegistryOptions>;
  /** Every layer mtime and the config `created` (default 1980-01-01T00:00:01Z). */
  creationTime?: Date;
  /** Refresh the package lists even when they are recent. */
  refresh?: boolean;
  onEvent?: (e: BaseEvent) => void;
}

export interface BaseArchImage {
  arch: string;
  platform: Platform;
  digest: Digest;
  size: number;
  packages: ResolvedPackage[];
}

export interface BaseImagesResult {
  build: { reference: string; digest: Digest; images: BaseArchImage[] };
  run: { reference: string; digest: Digest; images: BaseArchImage[] };
}

const PATH = 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin';

export function basePlatform(a: BaseArch): Platform {
  return { os: 'linux', architecture: a.architecture, ...(a.variant ? { variant: a.variant } : {}) };
}

export async function createBaseImages(opts: CreateBaseImagesOptions): Promise<BaseImagesResult> {
  const def = opts.definition;
  const dataDir = opts.dataDir ?? packfarmDataDir();
  const emit = opts.onEvent ?? (() => {});
  const refs = { build: opts.buildTag ?? def.build.tag, run: opts.runTag ?? def.run.tag };
  for (const kind of ['build', 'run'] as const)
    if (!refs[kind])
      throw new PackfarmError('INVALID_ARGS', `no destination for the ${kind} image`, {
        hint: `pass --${kind}-tag REF (a registry reference or oci:DIR[:TAG]) or set [${kind}] tag in base.toml`,
      });
  const openOpts = {
    create: true,
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    ...(opts.registry ? { registry: opts.registry } : {}),
  };
  const dest = {
    build: await openImage(refs.build!, openOpts),
    run: await openImage(refs.run!, openOpts),
  };
  const targets = def.arches.map(
    (arch): AptTarget => ({
      release: def.release,
      arch,
      mirror: def.mirror,
      securityMirror: def.securityMirror,
      dataDir,
    }),
  );
  await Promise.all(
    targets.map((t) =>
      updateLists(
        t,
        { onProgress: (message) => emit({ type: 'progress', arch: t.arch.debian, message }) },
        opts.refresh,
      ),
    ),
  );

  await mkdir(join(dataDir, 'base'), { recursive: true });
  // Named by its owner, so a base create killed half-way (a default builder's maker, say) leaves nothing that
  // the next one does not sweep; `work-*` is what older versions left, owner unknown.
  await sweepOldEntries(join(dataDir, 'base'), /^work-/, 24 * 60 * 60_000);
  const work = await makeTempDir(join(dataDir, 'base'), 'base-work');
  try {
    const images: Record<BaseImageKind, BaseArchImage[]> = { build: [], run: [] };
    for (const t of targets) {
      for (const kind of ['build', 'run'] as const) {
        images[kind].push(
          await createArchImage({
            target: t,
            kind,
            image: def[kind],
            def,
            store: dest[kind].store,
            workDir: join(work, `${t.arch.debian}-${kind}`),
            mtime: opts.creationTime ?? REPRODUCIBLE_EPOCH,
            emit,
          }),
        );
      }
    }
    const result = {} as BaseImagesResult;
    for (const kind of ['build', 'run'] as const) {
      // Always an index, even over one architecture: a base names its platforms.
      const target = dest[kind];
      const { digest } = await publishIndex({
        store: target.store,
        images: images[kind].map((i) => i.digest),
        tags: target.tag !== undefined ? [target.tag] : [],
      });
      emit({ type: 'index', kind, reference: target.display, digest });
      result[kind] = { reference: target.display, digest, images: images[kind] };
    }
    return result;
  } finally {
    await rm(work, { recursive: true, force: true });
  }
}

interface ArchImageInput {
  target: AptTarget;
  kind: BaseImageKind;
  image: ImageDefinition;
  def: BaseDefinition;
  store: ImageStore;
  workDir: string;
  mtime: Date;
  emit: (e: BaseEvent) => void;
}

async function createArchImage(input: ArchImageInput): Promise<BaseArchImage> {
  const { target: t, kind, image, def, emit } = input;
  const arch = t.arch.debian;
  const progress = (message: string) => emit({ type: 'progress', arch, kind, message });
  const source = image.packagesSource;
  const pkgs = await resolvePackages(t, { packages: image.packages, essential: image.essential, source });
  progress(`${pkgs.length} packages resolved`);
  const files = await downloadPackages(t, pkgs, { onProgress: progress });

  const fs = await createRootfs(input.workDir);
  for (const p of pkgs) await addPackage(fs, { ...p, file: files.get(p.name)! });
  const { handled } = await configureRootfs(fs, {
    userId: image.userId,
    groupId: image.groupId,
    userName: 'cnb',
    groupName: 'cnb',
    home: '/home/cnb',
  });
  for (const h of handled) emit({ type: 'handled', arch, kind, package: h.package, how: h.how });
  for (const w of fs.warnings) emit({ type: 'warning', arch, kind, package: w.package, message: w.message });
  if (!fs.nodes.has('usr/bin/sh'))
    emit({
      type: 'warning',
      arch,
      kind,
      message:
        'no /bin/sh in the image: app images on it can run only their direct process (no process types by name, no exec.d); add dash to have one',
    });

  const layerPath = join(input.workDir, 'layer.tar.gz');
  const layer = await writeLayerFromEntries(rootfsEntries(fs), {
    out: layerPath,
    mtime: input.mtime,
    gzipLevel: 6,
  });
  const platform = basePlatform(t.arch);
  const created = input.mtime.toISOString().replace(/\.000Z$/, 'Z');
  const env = [PATH];
  if (kind === 'build') env.push(`CNB_USER_ID=${image.userId}`, `CNB_GROUP_ID=${image.groupId}`);
  for (const [k, v] of Object.entries(image.env).sort(([a], [b]) => (a < b ? -1 : 1))) env.push(`${k}=${v}`);
  const labels: Record<string, string> = {
    'io.buildpacks.base.distro.name': 'debian',
    'io.buildpacks.base.distro.version': def.release.version,
    'io.buildpacks.base.id': def.id,
    // Deprecated since Platform API 0.12, still read by older platforms and buildpacks.
    'io.buildpacks.stack.id': def.id,
  };
  if (def.description) labels['io.buildpacks.base.description'] = def.description;
  const config = {
    ...platformToSpec(platform),
    created,
    config: { Env: env, User: `${image.userId}:${image.groupId}`, WorkingDir: '/', Labels: labels },
    rootfs: { type: 'layers', diff_ids: [layer.diffId] },
    history: [
      {
        created,
        created_by: `packfarm base create: debian ${def.release.codename} ${arch}, ${pkgs.length} packages`,
      },
    ],
  };
  const cfgBytes = Buffer.from(canonicalJson(config));
  const cfgDigest = sha256Digest(cfgBytes);
  progress(`uploading ${kind} image layer (${(await stat(layerPath)).size} bytes)`);
  await input.store.putBlob({
    digest: layer.digest,
    size: layer.size,
    open: () => createReadStream(layerPath),
  });
  await input.store.putBlob({
    digest: cfgDigest,
    size: cfgBytes.length,
    open: () => Readable.from([cfgBytes]),
  });
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: cfgDigest, size: cfgBytes.length },
    layers: [{ mediaType: MediaType.ociLayerGzip, digest: layer.digest, size: layer.size }],
  };
  const bytes = Buffer.from(canonicalJson(manifest));
  // By digest: the tag goes on the index once every architecture is in.
  const digest = await input.store.putManifest({ bytes, mediaType: MediaType.ociManifest });
  emit({
    type: 'image',
    arch,
    kind,
    platform: formatPlatform(platform),
    digest,
    packages: pkgs.length,
    layerSize: layer.size,
  });
  await rm(input.workDir, { recursive: true, force: true });
  return { arch, platform, digest, size: bytes.length, packages: pkgs };
}
