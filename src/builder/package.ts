import { mkdir, mkdtemp, readFile, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { writeLayer } from '../archive/index.js';
import { openLayoutStore } from '../image/layout-store.js';
import type { RegistryOptions } from '../image/registry-store.js';
import { publishImages } from '../image/publish-index.js';
import type { ImageStore } from '../image/store.js';
import { openImage } from '../image/transport.js';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import {
  type Platform,
  comparePlatforms,
  formatPlatform,
  hostPlatform,
  parsePlatform,
  platformToSpec,
  platformsEqual,
} from '../oci/platform.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { canonicalJson } from '../util/json.js';
import { parseToml } from '../util/toml.js';
import { REPRODUCIBLE_EPOCH } from '../util/time.js';
import { parseWith } from '../util/validate.js';
import {
  BUILDPACKAGE_METADATA_LABEL,
  BUILDPACK_LAYERS,
  type BuildpackModule,
  checkCompositeChildren,
  checkModuleTargets,
  layersLabel,
  moduleInfoJson,
  moduleFromSource,
  uniqueModules,
} from './modules.js';
import { isPackageUri, readBuildpackage } from './buildpackage.js';

/**
 * `packfarm buildpack package`: pack's package.toml → a buildpackage, one image per target (an index for
 * several) in a registry or an OCI layout, or a `.cnb` file (an OCI image layout in a tar, as pack writes).
 * Each image has one layer per buildpack id@version (/cnb/buildpacks/<id>/<version>), no base layers, and the
 * labels io.buildpacks.buildpackage.metadata (the entry buildpack) and io.buildpacks.buildpack.layers.
 * Dependencies (composite buildpacks) may be directories, archives or buildpackages; a buildpackage's layers
 * are reused as they are.
 */

const PackageTomlSchema = z.strictObject({
  buildpack: z.strictObject({ uri: z.string().min(1, 'must not be empty') }),
  dependencies: z
    .array(z.strictObject({ uri: z.string().min(1).optional(), image: z.string().min(1).optional() }))
    .default([]),
  targets: z
    .array(
      z.looseObject({
        os: z.string().min(1),
        arch: z.string().min(1),
        variant: z.string().optional(),
        distros: z.array(z.looseObject({ name: z.string(), version: z.string().optional() })).optional(),
      }),
    )
    .default([]),
  platform: z.strictObject({ os: z.string().optional() }).optional(),
});

export interface PackageBuildpackOptions {
  /** Destination: for 'image' a registry reference or oci:DIR[:TAG]; for 'file' the .cnb path. */
  name: string;
  config: string;
  format: 'image' | 'file';
  /** os/arch[/variant] … (default: package.toml [[targets]], else the buildpack's, else the host's platform). */
  targets?: string[];
  insecureRegistries?: string[];
  registry?: Partial<RegistryOptions>;
  creationTime?: Date;
  scratchDir: string;
}

export interface PackageResult {
  /** The reference, or the .cnb file. */
  reference: string;
  digest: Digest;
  mediaType: string;
  id: string;
  version: string;
  targets: { platform: string; digest: Digest }[];
}

export async function packageBuildpack(opts: PackageBuildpackOptions): Promise<PackageResult> {
  const source = opts.config;
  const text = await readFile(source, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new PackfarmError(
      'FILE_UNREADABLE',
      `${source}: cannot read package.toml: ${err.code ?? err.message}`,
      {
        cause: err,
      },
    );
  });
  const toml = parseWith(PackageTomlSchema, parseToml(text, source), source, 'INVALID_PACKAGE_TOML');
  if (isPackageUri(toml.buildpack.uri))
    throw new PackfarmError(
      'INVALID_PACKAGE_TOML',
      `${source}: buildpack.uri: "${toml.buildpack.uri}" is a buildpackage`,
      {
        hint: 'buildpack.uri names the buildpack directory or archive to package; buildpackages go in [[dependencies]]',
      },
    );
  toml.dependencies.forEach((d, i) => {
    if ((d.uri === undefined) === (d.image === undefined))
      throw new PackfarmError(
        'INVALID_PACKAGE_TOML',
        `${source}: dependencies[${i}]: give exactly one of uri and image`,
      );
  });
  const cwd = dirname(resolve(source));
  const mtime = opts.creationTime ?? REPRODUCIBLE_EPOCH;
  await mkdir(opts.scratchDir, { recursive: true });
  const scratch = await mkdtemp(join(opts.scratchDir, 'package-'));
  try {
    const main = await moduleFromSource(toml.buildpack.uri, {
      cwd,
      scratch: join(scratch, 'staged'),
      mtime,
    }).catch((err: unknown) => {
      if (isPackfarmError(err))
        throw new PackfarmError(err.code, `${source}: buildpack.uri: ${err.message}`, {
          cause: err,
          ...(err.hint ? { hint: err.hint } : {}),
        });
      throw err;
    });
    const fixed: BuildpackModule[] = [main];
    const perTarget: { uri: string; field: string }[] = [];
    for (const [i, d] of toml.dependencies.entries()) {
      const uri =
        d.image !== undefined
          ? d.image.includes('://') || d.image.startsWith('oci:')
            ? d.image
            : `docker://${d.image}`
          : d.uri!;
      const field = `${source}: dependencies[${i}]`;
      if (isPackageUri(uri)) perTarget.push({ uri, field });
      else fixed.push(await moduleFromSource(uri, { cwd, scratch: join(scratch, 'staged'), mtime }));
    }
    const platforms = chooseTargets(opts.targets, toml.targets, main, source);

    const images: { platform: Platform; digest: Digest; size: number; bytes: Buffer }[] = [];
    const layoutDir = opts.format === 'file' ? join(scratch, 'layout') : undefined;
    const dest = layoutDir
      ? {
          store: (await openLayoutStore(layoutDir, { create: true })) as ImageStore,
          tag: 'latest',
          display: resolve(opts.name),
        }
      : await openImage(opts.name, {
          create: true,
          ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
          ...(opts.registry ? { registry: opts.registry } : {}),
        });
    for (const platform of platforms) {
      const deps = await Promise.all(
        perTarget.map((d) =>
          readBuildpackage(d.uri, {
            cwd,
            scratch,
            platform,
            source: d.field,
            ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
          }),
        ),
      );
      const modules = uniqueModules([...fixed, ...deps.flatMap((p) => p.modules)]);
      checkCompositeChildren(modules, source, 'package’s buildpack and dependencies');
      checkModuleTargets(modules, platform, source);
      images.push({ platform, ...(await writePackageImage(dest.store, modules, main, platform, mtime)) });
    }
    images.sort((a, b) => comparePlatforms(a.platform, b.platform));
    const { digest, mediaType } = await publishImages({
      store: dest.store,
      images: images.map((i) => i.digest),
      tags: dest.tag !== undefined ? [dest.tag] : [],
    });
    if (layoutDir) {
      // The layout as one plain tar: entries sorted, fixed mtimes, so the same package gives the same file.
      await mkdir(dirname(resolve(opts.name)), { recursive: true });
      await writeLayer({ dir: layoutDir, out: resolve(opts.name), compression: 'none', mtime });
    }
    return {
      reference: dest.display,
      digest,
      mediaType,
      id: main.id,
      version: main.version,
      targets: images.map((i) => ({ platform: formatPlatform(i.platform), digest: i.digest })),
    };
  } finally {
    await rm(scratch, { recursive: true, force: true });
  }
}

function chooseTargets(
  flags: string[] | undefined,
  tomlTargets: z.output<typeof PackageTomlSchema>['targets'],
  main: BuildpackModule,
  source: string,
): Platform[] {
  let out: Platform[];
  if (flags && flags.length > 0) out = flags.map((f) => parsePlatform(f.split(':')[0]!, '--target'));
  else if (tomlTargets.length > 0)
    out = tomlTargets.map((t, i) =>
      parsePlatform([t.os, t.arch, t.variant].filter(Boolean).join('/'), `${source}: targets[${i}]`),
    );
  else {
    const declared = (main.info.targets ?? []).filter((t) => t.os && t.arch);
    out =
      declared.length > 0
        ? declared.map((t) =>
            parsePlatform(
              [t.os, t.arch, t.variant].filter(Boolean).join('/'),
              `${main.id} buildpack.toml targets`,
            ),
          )
        : [hostPlatform()];
  }
  const unique: Platform[] = [];
  for (const p of out) if (!unique.some((u) => platformsEqual(u, p))) unique.push(p);
  return unique;
}

async function writePackageImage(
  store: ImageStore,
  modules: readonly BuildpackModule[],
  main: BuildpackModule,
  platform: Platform,
  mtime: Date,
): Promise<{ digest: Digest; size: number; bytes: Buffer }> {
  for (const m of modules)
    await store.putBlob({
      digest: m.layer.digest,
      size: m.layer.size,
      open: m.layer.open,
      ...(m.layer.mountFrom ? { mountFrom: m.layer.mountFrom } : {}),
    });
  // pack's shape: the entry buildpack's ModuleInfo fields, then the stacks the package can run on.
  const metadata = { ...moduleInfoJson(main), stacks: resolvedStacks(main, modules) };
  const created = mtime.toISOString().replace(/\.000Z$/, 'Z');
  const config = {
    ...platformToSpec(platform),
    created,
    config: {
      Labels: {
        [BUILDPACKAGE_METADATA_LABEL]: JSON.stringify(metadata),
        [BUILDPACK_LAYERS]: JSON.stringify(layersLabel(modules)),
      },
    },
    rootfs: { type: 'layers', diff_ids: modules.map((m) => m.info.layerDiffID) },
    history: modules.map((m) => ({
      created,
      created_by: `packfarm buildpack package: ${m.id}@${m.version}`,
    })),
  };
  const cfgBytes = Buffer.from(canonicalJson(config));
  const cfgDigest = sha256Digest(cfgBytes);
  await store.putBlob({ digest: cfgDigest, size: cfgBytes.length, open: () => Readable.from([cfgBytes]) });
  const manifest = {
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: cfgDigest, size: cfgBytes.length },
    layers: modules.map((m) => ({
      mediaType: m.layer.mediaType,
      digest: m.layer.digest,
      size: m.layer.size,
    })),
  };
  const bytes = Buffer.from(canonicalJson(manifest));
  const digest = await store.putManifest({ bytes, mediaType: MediaType.ociManifest });
  return { digest, size: bytes.length, bytes };
}

type Stack = { id: string; mixins?: string[] };

/**
 * The stacks of a buildpackage's metadata label, as pack works them out: the entry buildpack's stacks (`*`
 * for a buildpack with neither stacks nor an order, none for a composite), narrowed by each other buildpack's
 * (same rule; composites skipped) — only ids both sides have, their mixins united and sorted; a `*` on one
 * side takes the other side's list. `null` when nothing is left, as pack writes a nil list.
 */
function resolvedStacks(main: BuildpackModule, modules: readonly BuildpackModule[]): Stack[] | null {
  const of = (m: BuildpackModule): Stack[] =>
    m.info.stacks?.length ? m.info.stacks : m.info.order?.length ? [] : [{ id: '*' }];
  let stacks = of(main);
  for (const m of modules) {
    if (m.id === main.id && m.version === main.version) continue;
    const theirs = of(m);
    if (stacks.length === 0) stacks = theirs;
    else if (theirs.length > 0) stacks = mergeStacks(stacks, theirs);
  }
  return stacks.length > 0 ? stacks : null;
}

function mergeStacks(a: Stack[], b: Stack[]): Stack[] {
  const aWild = a.some((s) => s.id === '*');
  const bWild = b.some((s) => s.id === '*');
  if (aWild && bWild) return [{ id: '*' }];
  if (aWild) return b;
  if (bWild) return a;
  const out: Stack[] = [];
  for (const s of b) {
    const mine = a.find((x) => x.id === s.id);
    if (!mine) continue;
    const mixins = [...new Set([...(mine.mixins ?? []), ...(s.mixins ?? [])])].sort();
    out.push({ id: s.id, ...(mixins.length > 0 ? { mixins } : {}) });
  }
  return out;
}
