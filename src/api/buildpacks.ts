import { chmod, cp, mkdir, writeFile } from 'node:fs/promises';
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
import type { ResolvedBuilder } from '../builder/resolve.js';
import {
  type ProjectBuildpack,
  type ProjectDescriptor,
  resolveProjectBuildpack,
} from '../platform/project.js';
import { PackfarmError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';

interface ResolveBuildpacksInput {
  flags: readonly string[];
  project: ProjectDescriptor | undefined;
  builder: ResolvedBuilder | undefined;
  cwd: string;
  scratchDir: string;
}

/**
 * The order to detect: one group from `--buildpack` flags (in flag order), else from project.toml's group,
 * else the builder's order; project.toml pre/post groups wrap every group either way.
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
  const fromBuilder = (id: string, version: string | undefined, what: string): OrderElement => {
    if (!input.builder)
      throw new PackfarmError(
        'BUILDPACK_NOT_FOUND',
        `${what}: ${id}${version ? `@${version}` : ''} names a buildpack of the builder, but no builder was given`,
        { hint: 'pass --builder, or give the buildpack as a directory or .tgz archive' },
      );
    const v = version ?? builderVersionOf(input.builder, id);
    if (!v)
      throw new PackfarmError(
        'BUILDPACK_NOT_FOUND',
        `${what}: buildpack ${id} is not in builder ${input.builder.name}'s order; give its version as ${id}@VERSION`,
      );
    return { id, version: v, optional: false };
  };
  const element = (s: StagedBuildpack): OrderElement => ({ id: s.id, version: s.version, optional: false });

  const fromFlag = async (flag: string): Promise<OrderElement> => {
    const path = isAbsolute(flag) ? flag : resolve(input.cwd, flag);
    if (await pathExists(path)) {
      const s = await stageBuildpack(path, { cwd: input.cwd, scratchDir: await scratch() });
      staged.push(s);
      return element(s);
    }
    const m = /^(?:urn:cnb:builder:)?([^@\s/][^@\s]*)(?:@(.+))?$/.exec(flag);
    if (m && !flag.includes('://') && !flag.endsWith('.tgz') && !flag.startsWith('.'))
      return fromBuilder(m[1] as string, m[2], `--buildpack ${flag}`);
    throw new PackfarmError('BUILDPACK_NOT_FOUND', `--buildpack ${flag}: no such directory or archive`, {
      hint: 'give a buildpack directory, a .tgz/.tar archive of one, or ID@VERSION of a builder buildpack',
    });
  };

  const fromProject = async (bp: ProjectBuildpack, project: ProjectDescriptor): Promise<OrderElement> => {
    const where = `${project.source} buildpack ${bp.id ?? bp.uri ?? ''}`.trim();
    const src = resolveProjectBuildpack(bp, dirname(project.source));
    switch (src.kind) {
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
          { hint: 'use a relative directory uri, an inline script, or a buildpack of the builder' },
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
