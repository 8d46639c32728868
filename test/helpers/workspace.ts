import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { type BuildOptions, type BuildResult, build } from '../../src/phase/build.js';
import type { GroupFile } from '../../src/platform/files.js';

/**
 * The working dirs of one lifecycle run (app, layers, platform) in a test's temp dir, and the fixture
 * buildpacks that build into them: what the export, exporter-CLI, no-shell launch, cache and restore tests
 * each set up.
 */

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/** The fixture buildpacks of test/fixtures/buildpacks/<set> (build, cache, detect, export). */
export function fixtureBuildpacks(set: string): string {
  return join(repoRoot, 'test', 'fixtures', 'buildpacks', set);
}

export interface Workspace {
  /** The app dir (`<dir>/workspace`). */
  app: string;
  layers: string;
  platform: string;
}

export interface WorkspaceOptions {
  /** App files, path → content (parents are created). */
  files?: Record<string, string>;
  /** User env for buildpacks: `<platform>/env/<name>` files. */
  env?: Record<string, string>;
}

/** Empty app, layers and platform dirs under `dir`, the app holding `files` and `<platform>/env` holding `env`. */
export async function createWorkspace(dir: string, opts: WorkspaceOptions = {}): Promise<Workspace> {
  const ws = { app: join(dir, 'workspace'), layers: join(dir, 'layers'), platform: join(dir, 'platform') };
  for (const d of Object.values(ws)) await mkdir(d, { recursive: true });
  for (const [path, content] of Object.entries(opts.files ?? {})) {
    await mkdir(dirname(join(ws.app, path)), { recursive: true });
    await writeFile(join(ws.app, path), content);
  }
  if (opts.env) {
    await mkdir(join(ws.platform, 'env'), { recursive: true });
    for (const [k, v] of Object.entries(opts.env)) await writeFile(join(ws.platform, 'env', k), v);
  }
  return ws;
}

export interface BuiltWorkspace extends Workspace {
  group: GroupFile;
  result: BuildResult;
}

/**
 * A workspace built by the fixture buildpacks `buildpacks` (a set under test/fixtures/buildpacks) for `group`:
 * host executor, an empty plan, target linux/amd64 and only PATH from this process, unless `build` says
 * otherwise.
 */
export async function buildWorkspace(
  dir: string,
  opts: WorkspaceOptions & { buildpacks: string; group: GroupFile; build?: Partial<BuildOptions> },
): Promise<BuiltWorkspace> {
  const ws = await createWorkspace(dir, opts);
  const result = await build({
    appDir: ws.app,
    layersDir: ws.layers,
    platformDir: ws.platform,
    buildpacksDir: fixtureBuildpacks(opts.buildpacks),
    group: opts.group,
    plan: { entries: [] },
    target: { os: 'linux', arch: 'amd64' },
    hostEnv: { PATH: process.env.PATH ?? '/usr/bin:/bin' },
    ...opts.build,
  });
  return { ...ws, group: opts.group, result };
}
