import { type BuildHooks, type BuildOptions, type BuildReport, build } from '../api/build.js';
import { parsePlatformList } from '../api/targets.js';
import { PackfarmError } from '../util/errors.js';
import { type FarmNodeConfig, farmsFilePath, getFarm, readFarms } from './config.js';
import { localNode } from './manage.js';
import { openFarm } from './runner.js';

/**
 * `packfarm build --farm NAME`: build() with the farm as its target runner. Planning happens here, against
 * every platform the farm's reachable nodes run; each target then goes to a node (farm/runner.ts), and the
 * index is published here once every target succeeded. Closing (also on SIGINT/SIGTERM through `signal`)
 * closes every node connection, which cancels the jobs still running there.
 */
export interface FarmBuildHooks extends Omit<BuildHooks, 'runTarget' | 'machine'> {
  /** The farm's name in farms.toml; undefined: the local node alone. */
  farm?: string;
  /** Nodes given directly (tests, API users) instead of a named farm. */
  nodes?: FarmNodeConfig[];
}

export async function buildOnFarm(options: BuildOptions, hooks: FarmBuildHooks = {}): Promise<BuildReport> {
  const env = hooks.env ?? process.env;
  let nodes: FarmNodeConfig[];
  if (hooks.nodes) nodes = hooks.nodes;
  else if (hooks.farm) {
    const path = farmsFilePath(env);
    nodes = getFarm(await readFarms(path), hooks.farm, path).nodes;
  } else nodes = [localNode()];
  const runner = await openFarm({
    nodes,
    env,
    ...(hooks.onEvent ? { onEvent: hooks.onEvent } : {}),
    ...(options.tmpDir ? { tmpDir: options.tmpDir } : {}),
  });
  const onAbort = () => void runner.close();
  hooks.signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (hooks.signal?.aborted)
      throw new PackfarmError('ABORTED', 'the build was cancelled', { exitCode: 130 });
    // Before planning: a requested platform no reachable node may build is the farm's error, naming every node.
    runner.check(
      parsePlatformList([...(options.platforms ?? []), ...(options.platform ? [options.platform] : [])]),
    );
    return await build(
      { ...options, jobs: options.jobs ?? runner.slots },
      {
        ...hooks,
        env,
        machine: runner.machine,
        runTarget: runner.runTarget,
      },
    );
  } finally {
    hooks.signal?.removeEventListener('abort', onAbort);
    await runner.close();
  }
}
