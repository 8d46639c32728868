import { mkdir, readFile, readdir, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { PackfarmError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';

/**
 * User build env, the platform side: `--env K=V`, `--env-file FILE` and project.toml `build.env` become
 * files in `<platform>/env/` (one file per variable, name = variable, content = value), which is the only
 * way user variables reach buildpacks.
 */
export type EnvPair = [name: string, value: string];

/**
 * Parse one `--env` value. `NAME=VALUE` sets VALUE verbatim (it may contain `=`); a bare `NAME` takes the
 * value from `hostEnv` (as docker and pack do) and is skipped with `undefined` when the host has none.
 */
export function parseEnvAssignment(
  text: string,
  hostEnv: Readonly<Record<string, string | undefined>>,
  source = '--env',
): EnvPair | undefined {
  const eq = text.indexOf('=');
  const name = eq < 0 ? text : text.slice(0, eq);
  checkName(name, source);
  if (eq >= 0) return [name, text.slice(eq + 1)];
  const fromHost = hostEnv[name];
  return fromHost === undefined ? undefined : [name, fromHost];
}

/**
 * Parse an env file: one assignment per line (same forms as `--env`); blank lines and lines starting with
 * `#` are skipped; leading/trailing whitespace of a line is dropped, nothing else is interpreted (no
 * quotes, no `export`, no expansion).
 */
export function parseEnvFileText(
  text: string,
  source: string,
  hostEnv: Readonly<Record<string, string | undefined>>,
): EnvPair[] {
  const out: EnvPair[] = [];
  text.split(/\r?\n/).forEach((rawLine, i) => {
    const line = rawLine.trim();
    if (line === '' || line.startsWith('#')) return;
    const pair = parseEnvAssignment(line, hostEnv, `${source}:${i + 1}`);
    if (pair) out.push(pair);
  });
  return out;
}

export async function readEnvFile(
  path: string,
  hostEnv: Readonly<Record<string, string | undefined>>,
): Promise<EnvPair[]> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new PackfarmError(
      'ENV_FILE_UNREADABLE',
      `${path}: cannot read env file: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  return parseEnvFileText(text, path, hostEnv);
}

export interface UserEnvSources {
  /** project.toml `[[io.buildpacks.build.env]]` (lowest precedence). */
  project?: readonly { name: string; value: string }[];
  /** `--env-file` files, in command-line order. */
  envFiles?: readonly string[];
  /** `--env` values, in command-line order (highest precedence). */
  envFlags?: readonly string[];
  hostEnv?: Readonly<Record<string, string | undefined>>;
}

/** Merge user env from all sources; later sources and later entries win. */
export async function collectUserEnv(sources: UserEnvSources): Promise<Map<string, string>> {
  const hostEnv = sources.hostEnv ?? process.env;
  const out = new Map<string, string>();
  for (const { name, value } of sources.project ?? []) {
    checkName(name, 'project.toml build.env');
    out.set(name, value);
  }
  for (const file of sources.envFiles ?? [])
    for (const [k, v] of await readEnvFile(file, hostEnv)) out.set(k, v);
  for (const flag of sources.envFlags ?? []) {
    const pair = parseEnvAssignment(flag, hostEnv);
    if (pair) out.set(pair[0], pair[1]);
  }
  return out;
}

/**
 * Write `<platformDir>/env/<NAME>` files. With `replace`, files already in `env/` that are not in `vars` are
 * removed first so a reused platform dir cannot leak variables from an earlier build.
 */
export async function writePlatformEnv(
  platformDir: string,
  vars: ReadonlyMap<string, string> | readonly EnvPair[],
  opts: { replace?: boolean } = {},
): Promise<void> {
  const dir = join(platformDir, 'env');
  const entries = vars instanceof Map ? [...vars] : [...(vars as readonly EnvPair[])];
  for (const [name] of entries) checkName(name, `${dir}`);
  await mkdir(dir, { recursive: true });
  if (opts.replace) {
    const keep = new Set(entries.map(([n]) => n));
    for (const existing of await readdir(dir)) {
      if (!keep.has(existing)) await rm(join(dir, existing), { recursive: true, force: true });
    }
  }
  for (const [name, value] of entries) await writeFileAtomic(join(dir, name), value);
}

/** A variable name must be usable as a file name and as an environment key. */
function checkName(name: string, source: string): void {
  if (
    name === '' ||
    name.includes('/') ||
    name.includes('\0') ||
    name.includes('=') ||
    name === '.' ||
    name === '..' ||
    /\s/.test(name)
  ) {
    throw new PackfarmError(
      'INVALID_ENV_NAME',
      `${source}: invalid environment variable name ${JSON.stringify(name)}`,
      { hint: 'use NAME=VALUE with a name of letters, digits and underscores' },
    );
  }
}
