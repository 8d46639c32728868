import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { main } from '../../src/cli/main.js';
import type { CliIO } from '../../src/cli/output.js';
import { parseReference } from '../../src/oci/reference.js';
import { createRegistryStore } from '../../src/image/registry-store.js';
import type { ImageStore } from '../../src/image/store.js';
import type { TestRegistry } from './registry.js';

/**
 * What the in-process CLI tests share: running `packfarm …` in this process with its output captured, a
 * private PACKFARM_HOME for the file, a store on the test registry, and app dirs written from a table.
 */

export interface CliRun {
  code: number;
  /** stdout as a terminal would show it: each printed chunk ends with a newline. */
  out: string;
  err: string;
}

/** `packfarm ARGV…` in this process (so coverage and breakpoints reach it); nothing goes to the terminal. */
export async function runCli(...argv: string[]): Promise<CliRun> {
  const out: string[] = [];
  const err: string[] = [];
  const line = (t: string) => (t.endsWith('\n') ? t : `${t}\n`);
  const io: CliIO = {
    out: (t) => out.push(line(t)),
    err: (t) => err.push(line(t)),
    // Exact bytes, as the terminal gets them (`--raw` manifests).
    raw: (b) => out.push(Buffer.from(b).toString('utf8')),
  };
  const code = await main(argv, io);
  return { code, out: out.join(''), err: err.join('') };
}

/** Set (or, for undefined, unset) these environment variables; the function returned puts back what was there. */
export function useEnv(vars: Record<string, string | undefined>): () => void {
  const saved = Object.keys(vars).map((k) => [k, process.env[k]] as const);
  const set = (k: string, v: string | undefined) => {
    if (v === undefined) delete process.env[k];
    else process.env[k] = v;
  };
  for (const [k, v] of Object.entries(vars)) set(k, v);
  return () => {
    for (const [k, v] of saved) set(k, v);
  };
}

/** Point PACKFARM_HOME at `dir`; the function returned puts back what it was. */
export function usePackfarmHome(dir: string): () => void {
  return useEnv({ PACKFARM_HOME: dir });
}

/** A store on repository `repo` of the loopback test registry (plain HTTP). */
export function registryStore(registry: TestRegistry, repo: string): ImageStore {
  return createRegistryStore(parseReference(`${registry.host}/${repo}`), {
    insecureRegistries: [registry.host],
  });
}

/** Write `files` (relative path → text) under `dir`, parents included; answers `dir`. */
export async function writeFiles(dir: string, files: Record<string, string>): Promise<string> {
  await mkdir(dir, { recursive: true });
  for (const [rel, text] of Object.entries(files)) {
    await mkdir(dirname(join(dir, rel)), { recursive: true });
    await writeFile(join(dir, rel), text);
  }
  return dir;
}

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** `packfarm ARGS…` as a user runs it: bin/packfarm.js (so dist/) in a child process, PACKFARM_HOME set, no colour. */
export function packfarmProcess(args: string[], opts: { home: string; cwd?: string }) {
  return execa(process.execPath, [join(repoRoot, 'bin', 'packfarm.js'), ...args], {
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    env: { PACKFARM_HOME: opts.home, NO_COLOR: '1' },
    reject: false,
  });
}

/** `skopeo inspect --tls-verify=false ARGS…` as JSON; throws with skopeo's stderr when it fails. */
export async function skopeoJson(...args: string[]): Promise<Record<string, unknown>> {
  const r = await execa('skopeo', ['inspect', '--tls-verify=false', ...args], { reject: false });
  if (r.exitCode !== 0) throw new Error(`skopeo inspect ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}
