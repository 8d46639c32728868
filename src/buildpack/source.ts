import { createReadStream } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { extractLayer } from '../archive/extract.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { type BuildpackDescriptor, type BuildpackStore, readBuildpackDescriptor } from './descriptor.js';

/**
 * Where the buildpacks of one build come from besides the builder: `--buildpack DIR|ARCHIVE`. A directory is
 * used where it is; an archive is unpacked under the scratch directory with the same safe extractor that
 * applies image layers (no `..`, nothing written through symlinks, no device nodes).
 */
export interface StagedBuildpack {
  id: string;
  version: string;
  /** Absolute buildpack root (holds buildpack.toml). */
  dir: string;
  descriptor: BuildpackDescriptor;
}

export interface StageBuildpackOptions {
  cwd: string;
  scratchDir: string;
}

/**
 * A buildpack directory (holding buildpack.toml) or a buildpack archive (.tgz / .tar.gz / .tar of such a
 * directory, buildpack.toml at the root or under one top directory) → staged, read, ready to run. Archives are
 * extracted (safely) under opts.scratchDir. Relative paths resolve against opts.cwd.
 */
export async function stageBuildpack(source: string, opts: StageBuildpackOptions): Promise<StagedBuildpack> {
  const path = resolve(opts.cwd, source.startsWith('file://') ? source.slice('file://'.length) : source);
  let isDir: boolean;
  try {
    isDir = (await stat(path)).isDirectory();
  } catch (err) {
    // Checked only now: a local directory may well have a ':' in its name.
    const scheme = /^([a-z][a-z0-9+.-]+):/i.exec(source)?.[1];
    if (scheme !== undefined && scheme.toLowerCase() !== 'file')
      throw new PackfarmError(
        'BUILDPACK_SOURCE_UNSUPPORTED',
        `buildpack "${source}": ${scheme}: buildpack sources are not supported yet`,
        { cause: err, hint: 'give a buildpack directory or a .tgz/.tar archive of one' },
      );
    throw new PackfarmError('BUILDPACK_NOT_FOUND', `buildpack "${source}": ${path} does not exist`, {
      cause: err,
      hint: 'give a buildpack directory (with buildpack.toml) or a .tgz/.tar archive of one',
    });
  }
  const dir = isDir ? path : await unpackArchive(path, source, opts.scratchDir);
  const descriptor = await readStagedDescriptor(dir, source);
  return { id: descriptor.id, version: descriptor.version, dir: descriptor.dir, descriptor };
}

async function readStagedDescriptor(dir: string, source: string): Promise<BuildpackDescriptor> {
  try {
    return await readBuildpackDescriptor(dir);
  } catch (err) {
    if (isPackfarmError(err, 'BUILDPACK_NOT_FOUND'))
      throw new PackfarmError('BUILDPACK_NOT_FOUND', `buildpack "${source}": no buildpack.toml in ${dir}`, {
        cause: err,
        hint: 'a buildpack directory holds buildpack.toml at its root',
      });
    throw err;
  }
}

/** Unpack into a fresh directory under scratchDir; the buildpack root is it or its only top directory. */
async function unpackArchive(path: string, source: string, scratchDir: string): Promise<string> {
  await mkdir(scratchDir, { recursive: true });
  const dest = await mkdtemp(join(scratchDir, 'buildpack-'));
  try {
    await extractLayer({ source: createReadStream(path), dest, name: `buildpack archive ${path}` });
  } catch (err) {
    await rm(dest, { recursive: true, force: true });
    if (isPackfarmError(err, 'UNSAFE_LAYER_ENTRY') || isPackfarmError(err, 'UNSUPPORTED_LAYER_COMPRESSION'))
      throw err;
    throw new PackfarmError(
      'BUILDPACK_ARCHIVE_INVALID',
      `buildpack "${source}": ${path} is neither a directory nor a readable .tgz/.tar archive: ${(err as Error).message}`,
      { cause: err, hint: 'create one with: tar -czf bp.tgz -C <buildpack dir> .' },
    );
  }
  const top = await readdir(dest, { withFileTypes: true });
  if (top.some((e) => e.name === 'buildpack.toml')) return dest;
  const only = top.length === 1 ? top[0] : undefined;
  if (only?.isDirectory()) return join(dest, only.name);
  throw new PackfarmError(
    'BUILDPACK_NOT_FOUND',
    `buildpack "${source}": the archive ${path} has no buildpack.toml at its root or under a single top directory`,
    { hint: 'create one with: tar -czf bp.tgz -C <buildpack dir> .' },
  );
}

/**
 * A BuildpackStore answering id@version from the staged buildpacks first, then the fallback (a builder's
 * buildpacks). Composite (order) buildpacks among the staged ones work too: their children are looked up
 * through this same store, so a child may be staged or come from the builder.
 *
 * `buildpacksDir` is the fallback's directory (staged buildpacks live wherever they were staged; their
 * descriptors carry their own `dir`), or '' when there is no fallback.
 */
export function layeredBuildpackStore(
  staged: readonly StagedBuildpack[],
  fallback?: BuildpackStore,
): BuildpackStore {
  const byKey = new Map<string, StagedBuildpack>();
  // The first one staged wins, as on the command line.
  for (const s of staged) if (!byKey.has(`${s.id}@${s.version}`)) byKey.set(`${s.id}@${s.version}`, s);
  return {
    buildpacksDir: fallback?.buildpacksDir ?? '',
    async lookup(id, version) {
      const hit = byKey.get(`${id}@${version}`);
      if (hit) return hit.descriptor;
      if (fallback) return fallback.lookup(id, version);
      const have = [...byKey.keys()];
      throw new PackfarmError(
        'BUILDPACK_NOT_FOUND',
        `buildpack ${id}@${version} not found among the given buildpacks (${have.join(', ') || 'none'})`,
        { hint: 'add it with --buildpack DIR|ARCHIVE, or use a builder that has it' },
      );
    },
  };
}
