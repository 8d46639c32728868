import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PackfarmError } from '../util/errors.js';

/**
 * The directories of one build: the app workspace, the layers dir, the platform dir and scratch space.
 *
 * By default they live at a stable place per output image and platform, `<data dir>/builds/<key>/`, so that
 * (1) a rebuild copies only the app files that changed into the workspace (`syncAppDir`), and (2) buildpacks
 * see the same paths every time: a buildpack that writes its app or layers path into a layer then still
 * produces the same layer, which is reused. Layers, platform and scratch dirs start empty every build (layers
 * come back from the previous image and the cache, as the lifecycle does). One build at a time holds the dir:
 * a second build of the same image and platform waits for nothing and fails with a clear message.
 *
 * With `keepTemp` or without a key the dirs are a fresh temp dir instead, removed afterwards unless kept.
 */
export interface BuildDirs {
  root: string;
  app: string;
  layers: string;
  platform: string;
  scratch: string;
  /** Whether `app` may hold the previous build's workspace (sync instead of copy). */
  persistent: boolean;
  release(): Promise<void>;
}

export interface OpenBuildDirsOptions {
  /** Identifies the image and platform; undefined → a fresh temp dir. */
  key?: string | undefined;
  dataDir: string;
  tmpDir?: string | undefined;
  keepTemp?: boolean;
}

export function buildDirKey(image: string, platform: string): string {
  return createHash('sha256').update(`${image}\n${platform}`).digest('hex').slice(0, 16);
}

export async function openBuildDirs(opts: OpenBuildDirsOptions): Promise<BuildDirs> {
  if (!opts.key || opts.keepTemp) {
    const root = await mkdtemp(join(opts.tmpDir ?? tmpdir(), 'packfarm-build-'));
    const dirs = layout(root);
    await makeDirs(dirs);
    return {
      ...dirs,
      persistent: false,
      release: async () => {
        if (!opts.keepTemp) await rm(root, { recursive: true, force: true });
      },
    };
  }
  const root = join(opts.dataDir, 'builds', opts.key);
  await mkdir(join(opts.dataDir, 'builds'), { recursive: true });
  const lock = `${root}.lock`;
  await acquire(lock, root);
  try {
    const dirs = layout(root);
    // Only the workspace carries over; the rest starts empty, as in a fresh build.
    await Promise.all(
      [dirs.layers, dirs.platform, dirs.scratch].map((d) => rm(d, { recursive: true, force: true })),
    );
    await makeDirs(dirs);
    return {
      ...dirs,
      persistent: true,
      release: async () => {
        // Layers can be large and come back from the image and cache anyway: only the workspace is kept.
        await Promise.all(
          [dirs.layers, dirs.platform, dirs.scratch].map((d) => rm(d, { recursive: true, force: true })),
        );
        await rm(lock, { recursive: true, force: true });
      },
    };
  } catch (err) {
    await rm(lock, { recursive: true, force: true });
    throw err;
  }
}

function layout(root: string) {
  return {
    root,
    app: join(root, 'workspace'),
    layers: join(root, 'layers'),
    platform: join(root, 'platform'),
    scratch: join(root, 'scratch'),
  };
}

async function makeDirs(d: ReturnType<typeof layout>): Promise<void> {
  await Promise.all([d.app, d.layers, d.platform, d.scratch].map((p) => mkdir(p, { recursive: true })));
}

/** An exclusive lock: a directory made atomically, holding the owner's pid; a dead owner's lock is taken over. */
async function acquire(lock: string, root: string): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    try {
      await mkdir(lock);
      await writeFile(join(lock, 'pid'), String(process.pid));
      return;
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err;
    }
    const pid = Number((await readFile(join(lock, 'pid'), 'utf8').catch(() => '')).trim());
    const owned = Number.isInteger(pid) && pid > 0;
    // No pid yet: the owner may be between mkdir and writeFile; only an old lock like that is abandoned.
    const fresh = !owned && Date.now() - ((await stat(lock).catch(() => undefined))?.mtimeMs ?? 0) < 10_000;
    if (fresh || (owned && (pid === process.pid || isAlive(pid)))) {
      throw new PackfarmError(
        'BUILD_IN_PROGRESS',
        `another build${owned ? ` (pid ${pid})` : ''} is using ${root}`,
        {
          hint: 'wait for it, or build with --keep-temp to use a separate temp dir',
        },
      );
    }
    // The owner is gone (or the lock is half-written): take it over.
    await rm(lock, { recursive: true, force: true });
  }
  throw new PackfarmError('BUILD_IN_PROGRESS', `cannot lock ${root}`, {
    hint: `remove ${lock} if no build runs`,
  });
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as { code?: string }).code === 'EPERM';
  }
}
