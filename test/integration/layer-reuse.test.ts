import { execFile } from 'node:child_process';
import { cp, lstat, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BuildReport, TargetReport } from '../../src/api/build.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { parsePlatform } from '../../src/oci/platform.js';
import { writeBusyboxBuildImage } from '../helpers/build-image.js';
import { writeTestImage } from '../helpers/images.js';
import { runCli, usePackfarmHome } from '../helpers/cli.js';

/**
 * A rebuild in the same build dir keeps the layer dirs the previous build left when their stat fingerprint and
 * recorded diffID still match (spec/buildpacks.md "Reusing layer dirs"), and never yields another image than a
 * build that trusts nothing (PACKFARM_TRUST_STAT=0): a buildpack's same-size, same-mtime change is hashed, a dir
 * tampered with between builds is extracted again, a cache whose layer changed is extracted. Host executor.
 */
const exec = promisify(execFile);
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const keeperBp = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'cache', 'test_layer-keeper', '1.0.0');
const BP = 'test/layer-keeper';

let root: string;
let home: string;
let restoreHome: (() => void) | undefined;
let runRef: string;
let app: string;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-layer-reuse-'));
  home = join(root, 'home');
  restoreHome = usePackfarmHome(home);
  const store = await openLayoutStore(join(root, 'run'), { create: true });
  await writeTestImage(store, { tag: 'run', platform: 'linux/amd64' });
  runRef = `oci:${join(root, 'run')}:run`;
  app = join(root, 'app');
  await cp(join(repoRoot, 'test', 'fixtures', 'apps', 'build-basic'), app, { recursive: true });
  const buildStore = await openLayoutStore(join(root, 'build-image'), { create: true });
  await writeBusyboxBuildImage({ store: buildStore, tag: 'build', platform: parsePlatform('linux/amd64') });
}, 120_000);
afterAll(async () => {
  restoreHome?.();
  delete process.env.PACKFARM_TRUST_STAT;
  await rm(root, { recursive: true, force: true });
});

type Built = TargetReport & { output: string };

/**
 * `packfarm build` of the app into layout `name` with the keeper buildpack; `trust: false` sets
 * PACKFARM_TRUST_STAT=0; `extra` flags at the end.
 */
async function buildInto(
  name: string,
  env: string[] = [],
  trust = true,
  extra: string[] = [],
): Promise<Built> {
  if (trust) delete process.env.PACKFARM_TRUST_STAT;
  else process.env.PACKFARM_TRUST_STAT = '0';
  try {
    const r = await runCli(
      'build',
      `oci:${join(root, name)}:app`,
      '--path',
      app,
      '--run-image',
      runRef,
      '--buildpack',
      keeperBp,
      '--platform',
      'linux/amd64',
      '--cache-dir',
      join(root, extra.includes('--build-image') ? 'cache-oci' : 'cache'),
      '--verbose',
      '--json',
      ...env.flatMap((e) => ['--env', e]),
      ...extra,
    );
    if (r.code !== 0) throw new Error(`packfarm build failed (${r.code}):\n${r.err}\n${r.out}`);
    const report = JSON.parse(r.out) as BuildReport;
    return { ...report.targets[0]!, output: r.err };
  } finally {
    delete process.env.PACKFARM_TRUST_STAT;
  }
}

const outcomes = (b: Built) => Object.fromEntries(b.restored.map((l) => [l.name, l.outcome]));

/** The text of big/data in the image's `big` layer (read from the layout's blob with tar). */
async function bigDataInImage(name: string, b: Built): Promise<string> {
  const layer = b.layers.find((l) => l.name === `bp:${BP}:big`)!;
  const blob = join(root, name, 'blobs', 'sha256', layer.digest.slice('sha256:'.length));
  const { stdout } = await exec('tar', ['-xzOf', blob, 'layers/test_layer-keeper/big/data']);
  return stdout;
}

/** The build dir's `big` layer dir of the output that has one (one output holds records at a time here). */
async function bigDirs(): Promise<string[]> {
  const builds = join(home, 'builds');
  const found: string[] = [];
  for (const d of await readdir(builds)) {
    const p = join(builds, d, 'layers', 'test_layer-keeper', 'big');
    if (
      await lstat(p)
        .then((s) => s.isDirectory())
        .catch(() => false)
    )
      found.push(p);
  }
  return found;
}

describe('rebuilds keep unchanged layer dirs', () => {
  it('keeps them on a no-change rebuild, with the same image as a build that trusts nothing', async () => {
    const first = await buildInto('a');
    expect(first.restored).toEqual([]);
    expect(first.output).toMatch(/big: building version 1/);

    const second = await buildInto('a');
    expect(outcomes(second)).toEqual({ [`${BP}:big`]: 'kept', [`${BP}:tool`]: 'kept' });
    expect(second.output).toMatch(
      /Keeping data for "test\/layer-keeper:big": unchanged since the last build/,
    );
    expect(second.output).toMatch(/big: reusing big-1-aaaa/);
    expect(second.output).toMatch(/tool: reusing tool-1/);
    expect(second.digest).toBe(first.digest);
    expect(second.cache?.layers).toEqual([
      { name: `${BP}:big`, outcome: 'reused' },
      { name: `${BP}:tool`, outcome: 'reused' },
    ]);

    // Off: everything is extracted from the cache and hashed, and the image is the same.
    const off = await buildInto('a', [], false);
    expect(outcomes(off)).toEqual({ [`${BP}:big`]: 'content', [`${BP}:tool`]: 'content' });
    expect(off.digest).toBe(first.digest);
    // A build with the switch off leaves no records: the next one extracts, the one after keeps.
    expect(outcomes(await buildInto('a'))).toEqual({ [`${BP}:big`]: 'content', [`${BP}:tool`]: 'content' });
    const kept = await buildInto('a');
    expect(outcomes(kept)[`${BP}:big`]).toBe('kept');
    expect(kept.digest).toBe(first.digest);
  }, 120_000);

  it('hashes a layer a buildpack changed without changing its size or mtime, in the image and the cache', async () => {
    const before = await buildInto('a');
    expect(outcomes(before)[`${BP}:big`]).toBe('kept');
    const mutated = await buildInto('a', ['KEEPER_MUTATE=big-1-bbbb']);
    expect(outcomes(mutated)[`${BP}:big`]).toBe('kept');
    expect(mutated.output).toMatch(/big: mutated to big-1-bbbb/);
    expect(mutated.digest).not.toBe(before.digest);
    expect(await bigDataInImage('a', mutated)).toBe('big-1-bbbb\n');
    expect(mutated.cache?.layers.find((l) => l.name === `${BP}:big`)?.outcome).toBe('added');

    // The records now describe the changed dir: kept again, same image.
    const again = await buildInto('a');
    expect(outcomes(again)[`${BP}:big`]).toBe('kept');
    expect(again.output).toMatch(/big: reusing big-1-bbbb/);
    expect(again.digest).toBe(mutated.digest);
    // The cache holds the changed layer: a build trusting nothing extracts it and makes the same image.
    const off = await buildInto('a', [], false);
    expect(off.output).toMatch(/big: reusing big-1-bbbb/);
    expect(off.digest).toBe(mutated.digest);
  }, 120_000);

  it('extracts a layer dir tampered with between builds again', async () => {
    const good = await buildInto('a');
    await buildInto('a'); // leaves records (the previous build trusted nothing)
    const [dir] = await bigDirs();
    expect(dir).toBeDefined();
    const data = join(dir!, 'data');
    const st = await stat(data, { bigint: true });
    const text = await readFile(data, 'utf8');
    // Same size, same mtime to the nanosecond (touch -r): only ctime (and the content) differ.
    await exec('touch', ['-r', data, join(root, 'ref')]);
    await writeFile(data, text.replace('bbbb', 'cccc'));
    await exec('touch', ['-r', join(root, 'ref'), data]);
    expect((await stat(data, { bigint: true })).mtimeNs).toBe(st.mtimeNs);
    const rebuilt = await buildInto('a');
    expect(outcomes(rebuilt)[`${BP}:big`]).toBe('content');
    expect(rebuilt.output).toMatch(/big: reusing big-1-bbbb/);
    expect(rebuilt.digest).toBe(good.digest);
  }, 120_000);

  it('extracts a layer whose cached version changed since the dir was recorded', async () => {
    await buildInto('a');
    // Another image built with the same cache dir puts tool version 2 in the cache.
    const other = await buildInto('b', ['TOOL_VERSION=2']);
    expect(other.output).toMatch(/tool: building version 2/);
    const back = await buildInto('a');
    expect(outcomes(back)[`${BP}:tool`]).toBe('content');
    expect(back.output).toMatch(/tool: restored tool-2/);
    expect(back.output).toMatch(/tool: building version 1/);
  }, 120_000);

  it('skips re-reading a cached file the last build verified, and still sees one damaged since', async () => {
    await buildInto('a');
    const quiet = await buildInto('a');
    expect(quiet.cache?.layers.find((l) => l.name === `${BP}:big`)?.outcome).toBe('reused');
    expect(quiet.output).toMatch(/verified by the last build, unchanged since/);
    // Damage the cached tar of `big`: one byte, same size, mtime put back.
    const files = (await exec('find', [join(root, 'cache'), '-name', '*.tar'])).stdout.trim().split('\n');
    let damaged = 0;
    for (const f of files) {
      const text = await readFile(f);
      const at = text.indexOf('big-1-');
      if (at < 0) continue;
      await exec('touch', ['-r', f, join(root, 'ref')]);
      text[at] = 'B'.charCodeAt(0);
      await writeFile(f, text);
      await exec('touch', ['-r', join(root, 'ref'), f]);
      damaged++;
    }
    expect(damaged).toBe(1);
    const after = await buildInto('a');
    expect(outcomes(after)[`${BP}:big`]).toBe('kept');
    expect(after.output).toMatch(/Skipping reuse for layer test\/layer-keeper:big: expected layer contents/);
    expect(after.cache?.layers.find((l) => l.name === `${BP}:big`)?.outcome).toBe('added');
    expect(after.digest).toBe(quiet.digest);
    // The cache is whole again: a build trusting nothing extracts it and makes the same image.
    const off = await buildInto('a', [], false);
    expect(outcomes(off)[`${BP}:big`]).toBe('content');
    expect(off.digest).toBe(quiet.digest);
  }, 120_000);

  it('keeps them with the oci executor too (buildpacks as the CNB user in a container), same image as off', async () => {
    const oci = ['--build-image', `oci:${join(root, 'build-image')}:build`];
    const first = await buildInto('c', [], true, oci);
    expect(first.executor).toBe('oci');
    expect(first.output).toMatch(/big: building version 1/);
    const second = await buildInto('c', [], true, oci);
    expect(outcomes(second)).toEqual({ [`${BP}:big`]: 'kept', [`${BP}:tool`]: 'kept' });
    expect(second.output).toMatch(/big: reusing big-1-aaaa/);
    expect(second.digest).toBe(first.digest);
    const off = await buildInto('c', [], false, oci);
    expect(outcomes(off)).toEqual({ [`${BP}:big`]: 'content', [`${BP}:tool`]: 'content' });
    expect(off.digest).toBe(first.digest);
    const mutated = await buildInto('c', ['KEEPER_MUTATE=big-1-dddd'], true, oci);
    expect(await bigDataInImage('c', mutated)).toBe('big-1-dddd\n');
  }, 300_000);
});
