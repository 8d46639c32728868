import { stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';

/** Where Debian (and most distributions) install runc; root's PATH has it, a user's often does not. */
export const DEFAULT_RUNTIME = '/usr/sbin/runc';

/**
 * The OCI runtime packfarm runs when none is given: /usr/sbin/runc when present, else `runc` on PATH.
 * The one resolution the oci executor, `packfarm node info` and `packfarm system report` all use, so the
 * report names the runtime builds actually run. undefined when there is none.
 */
export async function findRuntime(env: NodeJS.ProcessEnv = process.env): Promise<string | undefined> {
  if (await isFile(DEFAULT_RUNTIME)) return DEFAULT_RUNTIME;
  for (const dir of (env.PATH ?? '').split(delimiter)) {
    if (dir && (await isFile(join(dir, 'runc')))) return join(dir, 'runc');
  }
  return undefined;
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}
