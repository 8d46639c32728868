import { homedir } from 'node:os';
import { isAbsolute, join } from 'node:path';

/**
 * packfarm's own data directory: `$PACKFARM_HOME` when set, else `$XDG_DATA_HOME/packfarm`, else
 * `~/.local/share/packfarm`. Local manifest lists, the default local image layouts and build workdirs live
 * under it. A module of its own so the stores that use it do not import each other.
 */
export function packfarmDataDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.PACKFARM_HOME) return env.PACKFARM_HOME;
  // The XDG spec says relative values are invalid and must be ignored.
  if (env.XDG_DATA_HOME && isAbsolute(env.XDG_DATA_HOME)) return join(env.XDG_DATA_HOME, 'packfarm');
  return join(homedir(), '.local', 'share', 'packfarm');
}

/** The default local layout root: bare references without `--publish` live under `<data dir>/images`. */
export function localImagesDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(packfarmDataDir(env), 'images');
}
