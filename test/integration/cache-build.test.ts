import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type CacheLocation, openCache } from '../../src/cache/open.js';
import { exportCache } from '../../src/phase/cache.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import type { LayoutStore } from '../../src/image/layout-store.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { analyze } from '../../src/phase/analyze.js';
import { type BuildEvent, build } from '../../src/phase/build.js';
import { exportImage } from '../../src/phase/export.js';
import { restore } from '../../src/phase/restore.js';
import type { GroupFile } from '../../src/platform/files.js';
import { writeTestImage } from '../helpers/images.js';

/**
 * Three builds of one app with a real fixture buildpack (POSIX sh, host executor) through analyze → restore →
 * build → export → cache: the buildpack sees its cached layer again and reuses it, sees only the metadata of
 * its launch-only layer, and rebuilds when what it needs changes.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildpacksDir = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'cache');
const AMD64 = parsePlatform('linux/amd64');
const group: GroupFile = { group: [{ id: 'test/cache-user', version: '1.0.0', api: '0.12' }] };

let root: string;
let store: LayoutStore;
let cache: CacheLocation;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-cache-build-'));
  store = await openLayoutStore(join(root, 'images'), { create: true });
  await writeTestImage(store, { tag: 'run', platform: 'linux/amd64' });
  cache = { kind: 'dir', dir: join(root, 'cache') };
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

let n = 0;
async function fullBuild(env: Record<string, string> = {}) {
  const dir = join(root, `build-${++n}`);
  const ws = { app: join(dir, 'workspace'), layers: join(dir, 'layers'), platform: join(dir, 'platform') };
  await mkdir(ws.app, { recursive: true });
  await writeFile(join(ws.app, 'main.sh'), 'echo hi\n');
  await mkdir(join(ws.platform, 'env'), { recursive: true });
  for (const [k, v] of Object.entries(env)) await writeFile(join(ws.platform, 'env', k), v);

  const analyzed = await analyze({
    runImage: { store, target: 'run' },
    previousImage: { store, target: 'app' },
    platform: AMD64,
  });
  const restored = await restore({
    layersDir: ws.layers,
    group: group.group,
    ...(analyzed.previousMetadata ? { previousMetadata: analyzed.previousMetadata } : {}),
    cache: await openCache(cache, AMD64),
    platformApi: '0.13',
  });
  const lines: string[] = [];
  await build({
    appDir: ws.app,
    layersDir: ws.layers,
    platformDir: ws.platform,
    buildpacksDir,
    group,
    plan: { entries: [] },
    analyzed: analyzed.analyzed,
    platformApi: '0.13',
    hostEnv: { PATH: '/usr/local/bin:/usr/bin:/bin' },
    onEvent: (e: BuildEvent) => {
      if (e.type === 'buildpack-output') lines.push(e.line);
    },
  });
  await exportImage({
    layersDir: ws.layers,
    appDir: ws.app,
    group,
    analyzed: analyzed.analyzed,
    runImage: { store, target: 'run' },
    platform: AMD64,
    outputs: [{ store, tags: ['app'] }],
    previousImage: { store, target: 'app' },
  });
  const cached = await exportCache({
    location: cache,
    layersDir: ws.layers,
    group: group.group,
    target: AMD64,
  });
  return { output: lines.join('\n'), restored, cached };
}

describe('build cache across builds', () => {
  it('first build builds; rebuild reuses the cached layer; a changed need rebuilds it', async () => {
    const first = await fullBuild();
    expect(first.output).toMatch(/deps: building version 1/);
    expect(first.output).not.toMatch(/runtime: previous metadata/);
    expect(first.cached.layers.map((l) => [l.layer, l.outcome])).toEqual([['deps', 'added']]);

    const second = await fullBuild();
    expect(second.restored.layers.map((l) => [l.layer, l.restored])).toEqual([
      ['deps', 'content'],
      ['runtime', 'metadata'],
    ]);
    expect(second.output).toMatch(/deps: reusing cached version 1/);
    expect(second.output).toMatch(/runtime: previous metadata flavour = "plain"/);
    expect(second.output).not.toMatch(/unexpected contents/);
    expect(second.cached.layers.map((l) => [l.layer, l.outcome])).toEqual([['deps', 'reused']]);

    const third = await fullBuild({ DEPS_VERSION: '2' });
    expect(third.output).toMatch(/deps: building version 2/);
    expect(third.cached.layers.map((l) => [l.layer, l.outcome])).toEqual([['deps', 'added']]);
  });
});
