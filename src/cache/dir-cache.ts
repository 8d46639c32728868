import { createHash, randomBytes } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { copyFile, link, mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import type { Readable } from 'node:stream';
import { type Digest, isDigest } from '../oci/digest.js';
import type { Platform } from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { canonicalJson } from '../util/json.js';
import type { Logger } from '../util/log.js';
import { processAlive } from '../util/process.js';
import {
  CACHE_METADATA_LABEL,
  type CacheMetadata,
  cachePlatformKey,
  emptyCacheMetadata,
  parseCacheMetadata,
} from './metadata.js';
import type { CacheBackend, CacheWriter } from './types.js';

/**
 * A directory ("volume") cache. Each target platform has its own subdirectory, so a cache dir shared between
 * an amd64 and an arm64 build never mixes their layers:
 *
 *   <dir>/<os>-<arch>[-<variant>]/committed/<diffID>.tar            uncompressed layer tars
 *   <dir>/<os>-<arch>[-<variant>]/committed/io.buildpacks.lifecycle.cache.metadata   JSON metadata
 *   <dir>/<os>-<arch>[-<variant>]/staging-<pid>-<random>/          the export in progress
 *
 * A commit swaps the staging dir in for `committed` with renames, so a reader sees the old cache or the new
 * one, never a mix; an interrupted export leaves only a staging dir that the next export removes.
 *
 * A cache dir written by the reference lifecycle has no platform level (`<dir>/committed/…`, same file names).
 * When the build's platform has no committed cache of its own, that one is read instead, for whatever platform
 * the build targets (the reference keeps one cache per dir). What packfarm writes always goes to the platform
 * subdirectory; the reference's files are left as they are.
 */
export function dirCachePaths(dir: string, platform: Platform): { root: string; committed: string } {
  const root = join(dir, cachePlatformKey(platform));
  return { root, committed: join(root, 'committed') };
}

function blobName(diffId: Digest): string {
  if (!isDigest(diffId)) throw new Error(`not a digest: ${diffId}`);
  return `${diffId}.tar`;
}

export function openDirCache(dir: string, platform: Platform, logger: Logger): CacheBackend {
  const { root, committed: own } = dirCachePaths(dir, platform);
  let cached: Promise<CacheMetadata> | undefined;
  let source: Promise<string> | undefined;

  /** The committed dir reads come from: the platform's own, else the reference lifecycle's `<dir>/committed`. */
  const readDir = (): Promise<string> => {
    source ??= (async () => {
      if (await isDirectory(own)) return own;
      const legacy = join(dir, 'committed');
      if (await isDirectory(legacy)) {
        logger.debug(
          `cache: no ${cachePlatformKey(platform)} cache in ${dir}; reading ${legacy} (reference lifecycle layout)`,
        );
        return legacy;
      }
      return own;
    })();
    return source;
  };

  const readMetadata = async (): Promise<CacheMetadata> => {
    const metadataPath = join(await readDir(), CACHE_METADATA_LABEL);
    let text: string;
    try {
      text = await readFile(metadataPath, 'utf8');
    } catch (err) {
      if ((err as { code?: string }).code === 'ENOENT') return emptyCacheMetadata();
      throw new PackfarmError(
        'CACHE_UNREADABLE',
        `${metadataPath}: cannot read cache metadata: ${(err as Error).message}`,
        {
          cause: err,
        },
      );
    }
    try {
      return parseCacheMetadata(text, metadataPath);
    } catch (err) {
      // A damaged cache costs a slower build, never a failed one.
      logger.warn(`ignoring the cache at ${root}: ${(err as Error).message}`);
      return emptyCacheMetadata();
    }
  };

  const layerPath = async (diffId: Digest) => join(await readDir(), blobName(diffId));

  return {
    description: root,
    compression: 'none',
    metadata: () => {
      cached ??= readMetadata();
      return cached;
    },
    async hasLayer(diffId) {
      try {
        return (await stat(await layerPath(diffId))).isFile();
      } catch {
        return false;
      }
    },
    async layerStamp(diffId) {
      try {
        const st = await stat(await layerPath(diffId), { bigint: true });
        return st.isFile() ? `${st.dev}:${st.ino}:${st.size}:${st.mtimeNs}:${st.ctimeNs}` : undefined;
      } catch {
        return undefined;
      }
    },
    async verifyLayer(diffId) {
      // The tars are uncompressed: the file's own digest is the diffID.
      const path = await layerPath(diffId);
      let found: Digest;
      try {
        found = await sha256File(path);
      } catch (err) {
        const code = (err as NodeJS.ErrnoException).code;
        if (code === 'ENOENT') return `failed to find cache layer with SHA '${diffId}'`;
        if (code === 'EACCES')
          return `failed to read cache layer with SHA '${diffId}' due to insufficient permissions`;
        throw err;
      }
      return found === diffId
        ? undefined
        : `expected layer contents to have SHA '${diffId}'; found '${found}'`;
    },
    async layer(diffId): Promise<Readable> {
      const path = await layerPath(diffId);
      if (!(await this.hasLayer(diffId)))
        throw new PackfarmError('CACHE_LAYER_MISSING', `${path}: cached layer ${diffId} is missing`);
      return createReadStream(path);
    },
    async startWrite(): Promise<CacheWriter> {
      await mkdir(root, { recursive: true });
      await removeStaleStaging(root);
      const staging = join(root, `staging-${process.pid}-${randomBytes(6).toString('hex')}`);
      await mkdir(staging);
      let done = false;
      return {
        tempDir: staging,
        async reuse(diffId) {
          const from = await layerPath(diffId);
          const to = join(staging, blobName(diffId));
          try {
            await link(from, to);
          } catch (err) {
            const code = (err as { code?: string }).code;
            if (code === 'EEXIST') return;
            if (code !== 'EXDEV' && code !== 'EPERM' && code !== 'EMLINK') throw err;
            await copyFile(from, to);
          }
        },
        async add(file, layer) {
          const to = join(staging, blobName(layer.diffId));
          await rename(file, to);
        },
        async commit(meta) {
          await writeFileAtomic(join(staging, CACHE_METADATA_LABEL), `${canonicalJson(meta)}\n`);
          const committed = own;
          const backup = join(root, `committed-backup-${randomBytes(6).toString('hex')}`);
          let hadCommitted = true;
          try {
            await rename(committed, backup);
          } catch (err) {
            if ((err as { code?: string }).code !== 'ENOENT') throw err;
            hadCommitted = false;
          }
          try {
            await rename(staging, committed);
          } catch (err) {
            if (hadCommitted) await rename(backup, committed).catch(() => {});
            throw err;
          }
          done = true;
          if (hadCommitted) await rm(backup, { recursive: true, force: true });
        },
        async abort() {
          if (!done) await rm(staging, { recursive: true, force: true });
          done = true;
        },
      };
    },
    async clear() {
      await rm(root, { recursive: true, force: true });
      cached = undefined;
      // Cleared means empty: a reference-layout cache beside it is not read either.
      source = Promise.resolve(own);
    },
  };
}

/** Staging and backup dirs left by exports that died (no live process of ours can own them but this one). */
async function removeStaleStaging(root: string): Promise<void> {
  const { readdir } = await import('node:fs/promises');
  for (const name of await readdir(root)) {
    const m = /^staging-(\d+)-/.exec(name);
    const stale = name.startsWith('committed-backup-') || (m && !processAlive(Number(m[1])));
    if (stale) await rm(join(root, name), { recursive: true, force: true });
  }
}

async function isDirectory(path: string): Promise<boolean> {
  try {
    return (await stat(path)).isDirectory();
  } catch {
    return false;
  }
}

async function sha256File(path: string): Promise<Digest> {
  const hash = createHash('sha256');
  for await (const chunk of createReadStream(path)) hash.update(chunk as Buffer);
  return `sha256:${hash.digest('hex')}` as Digest;
}
