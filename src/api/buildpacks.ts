import { chmod, cp, mkdir, stat, writeFile } from 'node:fs/promises';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import {
  type BuildpackStore,
  type Order,
  type OrderElement,
  buildpackDirFor,
  createBuildpackStore,
} from '../buildpack/descriptor.js';
import { platformOrderFromFile } from '../platform/order.js';
import { layeredBuildpackStore, type StagedBuildpack, stageBuildpack } from '../buildpack/source.js';
import { isPackageUri, stageBuildpackage } from '../builder/buildpackage.js';
import type { ResolvedBuilder } from '../builder/resolve.js';
import type { RegistryOptions } from '../image/registry-store.js';
import type { Platform } from '../oci/platform.js';
import {
  type BuildpackSource,
  type ProjectBuildpack,
  type ProjectDescriptor,
  resolveProjectBuildpack,
} from '../platform/project.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';

interface ResolveBuildpacksInput {
  flags: readonly string[];
  project: ProjectDescriptor | undefined;
  builder: ResolvedBuilder | undefined;
  cwd: string;
  scratchDir: string;
  /** The target: a buildpackage (docker://, oci:, .cnb) is read for its platform. */
  platform: Platform;
  insecureRegistries?: string[];
  registry?: Partial<RegistryOptions>;
}

/**
 * Whether the buildpacks named by `--buildpack` or project.toml depend on the target's platform: a
 * buildpackage gives each platform its own child (its own layers), so such buildpacks are resolved per target.
 */
export function buildpacksVaryByPlatform(
  flags: readonly string[],
  project: ProjectDescriptor | undefined,
): boolean {
  if (flags.some((f) => isPackageUri(f))) return true;
  if (!project) return false;
  return [...project.group, ...project.pre, ...project.post].some(
    (b) => b.uri !== undefined && !b.script && isPackageUri(b.uri),
  );
}

/**
 * Whether a buildpack uri names a buildpackage on this machine's disk (an `oci:` layout, a `.cnb` file): a farm
 * node cannot read it where it is, so the farm sends it as an image (farm/runner.ts).
 */
export function isLocalBuildpackage(uri: string): boolean {
  return isPackageUri(uri) && !uri.startsWith('docker://');
}

/**
 * project.toml's buildpack entries that a build with these `--buildpack` flags runs: its group unless the
 * flags replace it, its pre and post groups always (as resolveBuildpacks orders them).
 */
export function projectBuildpacksInUse(
  flags: readonly string[],
  project: ProjectDescriptor | undefined,
): ProjectBuildpack[] {
  if (!project) return [];
  return [...(flags.length === 0 ? project.group : []), ...project.pre, ...project.post];
}

/**
 * The order to detect: one group from `--buildpack` flags (in flag order), else from project.toml's group,
 * else the builder's order; project.toml pre/post groups wrap every group either way. A buildpackage
 * (`docker://REF`, `oci:DIR[:TAG]`, a `.cnb` file) is read for `input.platform` and all its buildpacks
 * (a composite's children too) are staged; its entry buildpack goes into the group.
 */
export async function resolveBuildpacks(
  input: ResolveBuildpacksInput,
): Promise<{ store: BuildpackStore; order: Order }> {
  const staged: StagedBuildpack[] = [];
  let n = 0;
  const scratch = async () => {
    const d = join(input.scratchDir, String(n++));
    await mkdir(d, { recursive: true });
    return d;
  };
  const fromBuilder = async (
    id: string,
    version: string | undefined,
    what: string,
  ): Promise<OrderElement> => {
    if (!input.builder)
      throw new PackfarmError(
        'BUILDPACK_NOT_FOUND',
        `${what}: ${id}${version ? `@${version}` : ''} names a buildpack of the builder, but no builder was given`,
        {
          hint: 'pass --builder, or give the buildpack as a directory, .tgz archive or buildpackage (docker://, oci:, .cnb)',
        },
      );
    const v = version ?? builderVersionOf(input.builder, id);
    if (!v)
      throw new PackfarmError(
        'BUILDPACK_NOT_FOUND',
        `${what}: buildpack ${id} is not in builder ${input.builder.name}'s order; give its version as ${id}@VERSION`,
      );
    // Checked here so the error names the flag or file, not a detect failure later.
    await input.builder.store.lookup(id, v).catch((err: unknown) => {
      if (!isPackfarmError(err)) throw err;
      throw new PackfarmError(
        'BUILDPACK_NOT_FOUND',
        `${what}: builder ${input.builder?.name} has no buildpack ${id}@${v}`,
        { cause: err, hint: 'run packfarm builder inspect on the builder to see its buildpacks' },
      );
    });
    return { id, version: v, optional: false };
  };
  const fromPackage = async (uri: string, cwd: string, what: string): Promise<OrderElement> => {
    const pkg = await stageBuildpackage(uri, {
      cwd,
      scratch: await scratch(),
      platform: input.platform,
      source: what,
      ...(input.insecureRegistries ? { insecureRegistries: input.insecureRegistries } : {}),
      ...(input.registry ? { registry: input.registry } : {}),
    });
    staged.push(...pkg.staged);
    return { id: pkg.entry.id, version: pkg.entry.version, optional: false };
  };
  const element = (s: StagedBuildpack): OrderElement => ({ id: s.id, version: s.version, optional: false });

  const fromFlag = async (flag: string): Promise<OrderElement> => {
    const what = `--buildpack ${flag}`;
    if (flag.startsWith('docker://') || flag.startsWith('oci:')) return fromPackage(flag, input.cwd, what);
    if (flag.startsWith('urn:cnb:registry:'))
      throw new PackfarmError(
        'BUILDPACK_SOURCE_UNSUPPORTED',
        `${what}: the buildpack registry (urn:cnb:registry:) is not supported`,
        {
          hint: 'give the buildpackage image instead (docker://REF), or a buildpack directory, archive or .cnb file',
        },
      );
    const path = isAbsolute(flag) ? flag : resolve(input.cwd, flag);
    if (isPackageUri(flag) && !(await isDirectory(path))) return fromPackage(flag, input.cwd, what);
    if (await pathExists(path)) {
      const s = await stageBuildpack(path, { cwd: input.cwd, scratchDir: await scratch() });
      staged.push(s);
      return element(s);
    }
    const m = /^(?:urn:cnb:builder:)?([^@\s/][^@\s]*)(?:@(.+))?$/.exec(flag);
    if (m && !flag.includes('://') && !flag.endsWith('.tgz') && !flag.startsWith('.'))
      return fromBuilder(m[1] as string, m[2], what);
    throw new PackfarmError('BUILDPACK_NOT_FOUND', `${what}: no such directory or archive`, {
      hint: 'give a buildpack directory, a .tgz/.tar archive of one, a buildpackage (docker://REF, oci:DIR[:TAG], a .cnb file), or ID@VERSION of a builder buildpack',
    });
  };

  const fromProject = async (bp: ProjectBuildpack, project: ProjectDescriptor): Promise<OrderElement> => {
    const where = `${project.source} buildpack ${bp.uri ?? bp.id ?? ''}`.trim();
    let src: BuildpackSource;
    try {
      src = resolveProjectBuildpack(bp, dirname(project.source));
    } catch (err) {
      if (!isPackfarmError(err)) throw err;
      throw new PackfarmError(err.code, `${project.source}: ${err.message}`, {
        cause: err,
        ...(err.hint ? { hint: err.hint } : {}),
      });
    }
    switch (src.kind) {
      case 'package': {
        const e = await fromPackage(src.uri, dirname(project.source), where);
        for (const key of ['id', 'version'] as const)
          if (bp[key] !== undefined && bp[key] !== e[key])
            throw new PackfarmError(
              'INVALID_PROJECT_DESCRIPTOR',
              `${where}: ${key} "${bp[key]}", but the buildpackage holds ${e.id}@${e.version}`,
              { hint: `drop ${key}, or point uri at the buildpackage of that buildpack` },
            );
        return e;
      }
      case 'path': {
        const s = await stageBuildpack(src.path, {
          cwd: dirname(project.source),
          scratchDir: await scratch(),
        });
        staged.push(s);
        return element(s);
      }
      case 'builder':
        return fromBuilder(src.id, src.version, where);
      case 'inline': {
        const s = await writeInlineBuildpack(src, bp, await scratch(), where);
        staged.push(s);
        return element(s);
      }
      default:
        throw new PackfarmError(
          'BUILDPACK_SOURCE_UNSUPPORTED',
          `${where}: ${src.kind} buildpack sources are not supported yet`,
          {
            hint: 'use a directory or archive uri, a buildpackage (docker://, oci:, .cnb), an inline script, or a buildpack of the builder',
          },
        );
    }
  };

  const project = input.project;
  const pre = project ? await seq(project.pre, (b) => fromProject(b, project)) : [];
  const post = project ? await seq(project.post, (b) => fromProject(b, project)) : [];
  let groups: Order;
  if (input.flags.length > 0) {
    groups = [{ group: await seq(input.flags, fromFlag) }];
  } else if (project && project.group.length > 0) {
    groups = [{ group: await seq(project.group, (b) => fromProject(b, project)) }];
  } else if (input.builder) {
    groups = platformOrderFromFile(input.builder.order).order;
  } else {
    throw new PackfarmError('NO_BUILDPACKS', 'no buildpacks to run', {
      hint: 'pass --builder, --buildpack DIR|ARCHIVE, or list [[io.buildpacks.group]] in project.toml',
    });
  }
  const order = groups.map((g) => ({ group: [...pre, ...g.group, ...post] }));
  const store = layeredBuildpackStore(staged, input.builder?.store);
  return { store, order };
}

async function isDirectory(path: string): Promise<boolean> {
  return (await stat(path).catch(() => undefined))?.isDirectory() ?? false;
}

function builderVersionOf(builder: ResolvedBuilder, id: string): string | undefined {
  for (const g of builder.order.order)
    for (const e of g.group) if (e.id === id && e.version) return e.version;
  return undefined;
}

async function seq<T, R>(items: readonly T[], fn: (t: T) => Promise<R>): Promise<R[]> {
  const out: R[] = [];
  for (const i of items) out.push(await fn(i));
  return out;
}

/**
 * project.toml `script`: a buildpack whose bin/build is the inline script, run by `shell` (default /bin/sh);
 * bin/detect always passes.
 */
async function writeInlineBuildpack(
  src: { id: string; api: string; shell: string; inline: string },
  bp: ProjectBuildpack,
  dir: string,
  where: string,
): Promise<StagedBuildpack> {
  if (!src.id)
    throw new PackfarmError('INVALID_PROJECT_DESCRIPTOR', `${where}: an inline buildpack needs an id`);
  const version = bp.version ?? '0.0.0';
  const shell = src.shell || '/bin/sh';
  const interpreter = shell.startsWith('/') ? shell : `/usr/bin/env ${shell}`;
  await mkdir(join(dir, 'bin'), { recursive: true });
  await writeFile(
    join(dir, 'buildpack.toml'),
    `api = ${JSON.stringify(src.api)}\n\n[buildpack]\nid = ${JSON.stringify(src.id)}\nversion = ${JSON.stringify(version)}\n`,
  );
  await writeFile(join(dir, 'bin', 'detect'), '#!/bin/sh\nexit 0\n');
  await writeFile(join(dir, 'bin', 'build'), `#!${interpreter}\n${src.inline}\n`);
  await chmod(join(dir, 'bin', 'detect'), 0o755);
  await chmod(join(dir, 'bin', 'build'), 0o755);
  return stageBuildpack(dir, { cwd: dir, scratchDir: dir });
}

/**
 * Every buildpack the order can reach (composite buildpacks' own orders included), copied into one
 * `<dir>/<escaped id>/<version>/` tree: the oci executor mounts a single buildpacks dir at /cnb/buildpacks,
 * while a build's buildpacks may come from a builder, flags and project.toml in different places.
 */
export async function collectBuildpacks(
  store: BuildpackStore,
  order: Order,
  dir: string,
): Promise<BuildpackStore> {
  const seen = new Set<string>();
  const visit = async (o: Order): Promise<void> => {
    for (const g of o)
      for (const e of g.group) {
        const key = `${e.id}@${e.version}`;
        if (seen.has(key)) continue;
        seen.add(key);
        let d: Awaited<ReturnType<BuildpackStore['lookup']>>;
        try {
          d = await store.lookup(e.id, e.version ?? '');
        } catch (err) {
          // An optional buildpack that is not there simply does not take part (detect says so).
          if (e.optional) continue;
          throw err;
        }
        await cp(d.dir, buildpackDirFor(dir, e.id, d.version), { recursive: true, verbatimSymlinks: true });
        await visit(d.order);
      }
  };
  await mkdir(dir, { recursive: true });
  await visit(order);
  return createBuildpackStore(dir);
}
