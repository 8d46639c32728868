import { lchown, lstat, readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { PackfarmError } from '../util/errors.js';
import type { ExecDirs, ExecSpec, Executor } from './executor.js';

/**
 * The lifecycle (TypeScript, on the host) reads and writes the host's dirs; an executor that runs buildpacks
 * inside a container mounts those dirs elsewhere (`/workspace`, `/layers` …). Phases build every spec in the
 * host's view and pass it through `toExecutorView` right before `run`, so the two views never mix.
 */

export type PathMapper = (value: string) => string;

/** The executor's mounts as host → inside pairs, or undefined when the executor sees the host's paths. */
export function mountPairs(executor: Executor): Array<[string, string]> | undefined {
  if (!executor.paths || !executor.hostPaths) return undefined;
  const keys: Array<keyof ExecDirs> = ['app', 'layers', 'platform', 'buildpacks', 'scratch'];
  return keys.map((k) => [trimSlash(executor.hostPaths![k]), trimSlash(executor.paths![k])]);
}

/**
 * Rewrite host paths under the executor's mounts to the paths inside: whole paths and path prefixes at the
 * start of a value or after a space, `:`, `;`, `=` or a quote (PATH-like lists, command lines).
 * `/tmp/ws/x` → `/workspace/x`; `/tmp/ws2` stays.
 */
export function hostToInside(pairs: ReadonlyArray<[string, string]>): PathMapper {
  const active = pairs
    .filter(([from, to]) => from !== '' && from !== '/' && from !== to)
    // Longest first: a mount nested in another (scratch under a build dir) must win.
    .sort(([a], [b]) => b.length - a.length);
  if (active.length === 0) return (s) => s;
  const res = active.map(
    ([from, to]) => [new RegExp(`(?<=^|[\\s:;"'=])${escapeRegExp(from)}(?=$|[/\\s:;"'=])`, 'g'), to] as const,
  );
  return (s) => {
    let out = s;
    for (const [re, to] of res) out = out.replace(re, () => to);
    return out;
  };
}

/**
 * A spec built from host paths, as the executor must get it: argv, cwd and every env value rewritten.
 * The executable and the working dir must lie under a mount, or the process could not see them.
 */
export function toExecutorView(executor: Executor, spec: ExecSpec): ExecSpec {
  const pairs = mountPairs(executor);
  if (!pairs) return spec;
  const map = hostToInside(pairs);
  const exe = spec.argv[0] ?? '';
  for (const [what, p] of [
    ['executable', exe],
    ['working directory', spec.cwd],
  ] as const) {
    if (!pairs.some(([from]) => p === from || p.startsWith(`${from}/`))) {
      throw new PackfarmError(
        'EXEC_PATH_NOT_MOUNTED',
        `${what} ${p} is not inside the app, layers, platform or buildpacks dir, so the ${executor.kind} executor's container cannot see it`,
        { hint: `mounted: ${pairs.map(([from, to]) => `${from} → ${to}`).join(', ')}` },
      );
    }
  }
  const env: Record<string, string> = {};
  for (const [k, v] of Object.entries(spec.env)) env[k] = map(v);
  return { ...spec, argv: spec.argv.map(map), cwd: map(spec.cwd), env };
}

/**
 * The environment the build environment itself provides (the build image's Env), which phases use instead of
 * the lifecycle's own environment; the host executor has none, so the lifecycle's is used.
 */
export function buildEnvironmentEnv(
  executor: Executor,
  fallback: Readonly<Record<string, string | undefined>>,
): Readonly<Record<string, string | undefined>> {
  return executor.baseEnv ?? fallback;
}

/**
 * Give `path` (and, with `recursive`, everything under it) to the executor's build user, as the reference
 * lifecycle does before dropping privileges: bin/detect must write its plan file, bin/build its layers.
 * A no-op for executors that run as the lifecycle's own user, and for anything already owned.
 */
export async function handOver(
  executor: Executor,
  path: string,
  opts: { recursive?: boolean } = {},
): Promise<void> {
  const user = executor.user;
  if (!user) return;
  await chownTree(path, user.uid, user.gid, opts.recursive === true);
}

export async function chownTree(path: string, uid: number, gid: number, recursive: boolean): Promise<void> {
  const st = await lstat(path);
  if (st.uid !== uid || st.gid !== gid) await lchown(path, uid, gid);
  if (!recursive || !st.isDirectory()) return;
  for (const name of await readdir(path)) await chownTree(join(path, name), uid, gid, true);
}

function trimSlash(p: string): string {
  return p.length > 1 ? p.replace(/\/+$/, '') : p;
}

function escapeRegExp(s: string): string {
  return s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
}
