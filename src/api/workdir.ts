import { createHash } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { escapeId } from '../buildpack/layers.js';
import { LAYER_STATE_FILE, type LayerState, readLayerState, wipeLayersExcept } from '../phase/layer-state.js';
import { PackfarmError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { acquireLock } from '../util/lock.js';
import { makeTempDir } from '../util/tempdir.js';

/**
 * The directories of one build: the app workspace, the layers dir, the platform dir and scratch space.
 *
 * By default they live at a stable place per output image and platform, `<data dir>/builds/<key>/`, so that
 * (1) a rebuild copies only the app files that changed into the workspace (`syncAppDir`), and (2) buildpacks
 * see the same paths every time: a buildpack that writes its app or layers path into a layer then still
 * produces the same layer, which is reused. Platform and scratch dirs start empty every build, and so do layers
 * (they come back from the previous image and the cache, as the lifecycle does) except, with `trustStat`, the
 * layer dirs the previous successful build recorded (phase/layer-state.ts), which the restorer keeps when
 * unchanged and removes otherwise. One build at a time holds the dir:
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
  /**
   * With `trustStat` on a persistent dir: where this build's layer records go, and the previous successful
   * build's records, whose layer dirs were left in `layers` (phase/layer-state.ts).
   */
  layerState?: { path: string; prior: LayerState | undefined };
  release(): Promise<void>;
}

export interface OpenBuildDirsOptions {
  /** Identifies the image and platform; undefined → a fresh temp dir. */
  key?: string | undefined;
  dataDir: string;
  tmpDir?: string | undefined;
  keepTemp?: boolean;
  /**
   * Keep the layer dirs the previous successful build recorded (its state file) instead of wiping them, for
   * restore to keep when unchanged; see phase/layer-state.ts. Off: the layers dir starts empty.
   */
  trustStat?: boolean;
  logger?: Logger;
}

export function buildDirKey(image: string, platform: string): string {
  return createHash('sha256').update(`${image}\n${platform}`).digest('hex').slice(0, 16);
}

export async function openBuildDirs(opts: OpenBuildDirsOptions): Promise<BuildDirs> {
  if (!opts.key || opts.keepTemp) {
    const root = await makeTempDir(opts.tmpDir ?? tmpdir(), 'build');
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
  const lock = await acquireLock(`${root}.lock`, {
    // A build holds its dir for minutes: fail at once rather than wait, and only a dead owner is stale.
    timeoutMs: 0,
    staleMs: Number.POSITIVE_INFINITY,
    busy: (owner) =>
      new PackfarmError(
        'BUILD_IN_PROGRESS',
        `another build${owner ? ` (pid ${owner.pid}${owner.host === hostname() ? '' : ` on ${owner.host}`})` : ''} is using ${root}`,
        { hint: 'wait for it, or build with --keep-temp to use a separate temp dir' },
      ),
  });
  try {
    const dirs = layout(root);
    const statePath = join(root, LAYER_STATE_FILE);
    // The records are read once and removed: a build that fails half-way leaves none behind.
    const prior = opts.trustStat ? await readLayerState(statePath, opts.logger) : undefined;
    await rm(statePath, { force: true });
    // Only the workspace carries over, and the recorded layer dirs (restore keeps or removes them); the rest
    // starts empty, as in a fresh build.
    await Promise.all([
      prior
        ? wipeLayersExcept(dirs.layers, keepSet(prior))
        : rm(dirs.layers, { recursive: true, force: true }),
      ...[dirs.platform, dirs.scratch].map((d) => rm(d, { recursive: true, force: true })),
    ]);
    await makeDirs(dirs);
    return {
      ...dirs,
      persistent: true,
      ...(opts.trustStat ? { layerState: { path: statePath, prior } } : {}),
      release: async () => {
        // Layers can be large and come back from the image and cache anyway: only the workspace is kept, and
        // the layer dirs a successful build recorded.
        const saved = opts.trustStat ? await readLayerState(statePath, opts.logger) : undefined;
        await Promise.all([
          saved
            ? wipeLayersExcept(dirs.layers, keepSet(saved))
            : rm(dirs.layers, { recursive: true, force: true }),
          ...[dirs.platform, dirs.scratch].map((d) => rm(d, { recursive: true, force: true })),
        ]);
        await lock.release();
      },
    };
  } catch (err) {
    await lock.release();
    throw err;
  }
}

/** `<escaped buildpack id>/<layer>` of every recorded layer. */
function keepSet(state: LayerState): Set<string> {
  return new Set(
    Object.keys(state.layers).map((key) => {
      const i = key.indexOf(':');
      return `${escapeId(key.slice(0, i))}/${key.slice(i + 1)}`;
    }),
  );
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
