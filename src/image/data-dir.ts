import { constants as fsConstants } from 'node:fs';
import { access, mkdir, stat } from 'node:fs/promises';
import { homedir } from 'node:os';
import { dirname, isAbsolute, join } from 'node:path';
import { PackfarmError } from '../util/errors.js';

/**
 * packfarm's own data directory: `$PACKFARM_HOME` when set, else `$XDG_DATA_HOME/packfarm`, else
 * `~/.local/share/packfarm`. Local manifest lists, the default local image layouts and build workdirs live
 * under it. A module of its own so the stores that use it do not import each other.
 */
export function packfarmDataDir(env: NodeJS.ProcessEnv = process.env): string {
  return dataDirAndSource(env).dir;
}

/** The data dir and where it came from, for messages that must say which setting to fix. */
function dataDirAndSource(env: NodeJS.ProcessEnv): { dir: string; from: string } {
  if (env.PACKFARM_HOME) return { dir: env.PACKFARM_HOME, from: 'PACKFARM_HOME' };
  // The XDG spec says relative values are invalid and must be ignored.
  if (env.XDG_DATA_HOME && isAbsolute(env.XDG_DATA_HOME))
    return { dir: join(env.XDG_DATA_HOME, 'packfarm'), from: 'XDG_DATA_HOME' };
  return { dir: join(homedir(), '.local', 'share', 'packfarm'), from: 'HOME' };
}

const ready = new Set<string>();

/**
 * The data dir, made if missing and checked to be a directory this process can write: a PACKFARM_HOME (or
 * XDG_DATA_HOME, or HOME) that is a file, lies under a file, or is not writable is a DATA_DIR_UNUSABLE error
 * naming the path and the variable, not a stack trace from whichever write first trips over it.
 */
export async function ensureDataDir(env: NodeJS.ProcessEnv = process.env): Promise<string> {
  const { dir, from } = dataDirAndSource(env);
  if (ready.has(dir)) return dir;
  const setting =
    from === 'HOME'
      ? `~/.local/share/packfarm (HOME=${env.HOME ?? homedir()}; neither PACKFARM_HOME nor XDG_DATA_HOME is set)`
      : from === 'XDG_DATA_HOME'
        ? `$XDG_DATA_HOME/packfarm (XDG_DATA_HOME=${env.XDG_DATA_HOME})`
        : `$PACKFARM_HOME`;
  const unusable = (why: string, cause?: unknown) =>
    new PackfarmError('DATA_DIR_UNUSABLE', `packfarm's data dir ${dir}, from ${setting}, ${why}`, {
      hint:
        'it holds local images, manifest lists, build dirs and caches: point PACKFARM_HOME at a directory ' +
        'this user can create and write',
      cause,
    });
  try {
    await mkdir(dir, { recursive: true });
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const path = (err as NodeJS.ErrnoException).path ?? dir;
    if (code === 'EEXIST' || code === 'ENOTDIR')
      throw unusable(
        `cannot be made: ${await firstNonDirectory(path)} is a file, where a directory was expected`,
        err,
      );
    if (code === 'EACCES' || code === 'EPERM')
      throw unusable(`cannot be made: permission denied creating ${path}`, err);
    if (code === 'EROFS') throw unusable(`cannot be made: ${path} is on a read-only file system`, err);
    throw err;
  }
  const st = await stat(dir);
  if (!st.isDirectory()) throw unusable('is not a directory');
  try {
    await access(dir, fsConstants.W_OK | fsConstants.X_OK);
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    throw unusable(
      code === 'EROFS'
        ? 'is on a read-only file system, where a writable directory was expected'
        : `is not writable by this user (uid ${process.getuid?.() ?? '?'}), where a writable directory was expected`,
      err,
    );
  }
  ready.add(dir);
  return dir;
}

/** The path itself or the nearest of its ancestors that exists and is not a directory (what blocks a mkdir -p). */
async function firstNonDirectory(path: string): Promise<string> {
  let blocker = path;
  for (let p = path; ; p = dirname(p)) {
    const st = await stat(p).catch(() => undefined);
    if (st && !st.isDirectory()) blocker = p;
    if (st?.isDirectory() || dirname(p) === p) return blocker;
  }
}

/** The default local layout root: bare references without `--publish` live under `<data dir>/images`. */
export function localImagesDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(packfarmDataDir(env), 'images');
}
