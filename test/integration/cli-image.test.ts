import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LayoutStore, openLayoutStore } from '../../src/image/layout-store.js';
import { MediaType } from '../../src/oci/media-types.js';
import { runCli, usePackfarmHome } from '../helpers/cli.js';
import { type TestImage, writeTestImage, writeTestIndex } from '../helpers/images.js';
import { assertOciValid } from '../helpers/oci-schema.js';

/** `packfarm image …` and `packfarm manifest …` on OCI layouts, in-process through main() and as a process. */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

let tmp: string;
let srcDir: string;
let src: LayoutStore;
let amd: TestImage;
let arm: TestImage;
let indexDigest: string;
let restoreHome: (() => void) | undefined;

beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-cli-image-'));
  restoreHome = usePackfarmHome(join(tmp, 'home'));
  srcDir = join(tmp, 'src');
  src = await openLayoutStore(srcDir, { create: true });
  amd = await writeTestImage(src, {
    platform: 'linux/amd64',
    tag: 'amd64',
    layers: [{ 'a.txt': 'a\n' }, { 'b.txt': 'b\n' }],
    entrypoint: ['/bin/app'],
    env: ['PATH=/bin', 'MODE=test'],
    labels: { 'io.packfarm.example': 'yes' },
  });
  arm = await writeTestImage(src, { platform: 'linux/arm64', tag: 'arm64' });
  indexDigest = (await writeTestIndex(src, [amd, arm], { tag: 'multi' })).digest;
});
afterAll(async () => {
  restoreHome?.();
  await rm(tmp, { recursive: true, force: true });
});

describe('packfarm image (in-process)', () => {
  it('copies between layouts and reports as JSON', async () => {
    const r = await runCli('image', 'copy', `oci:${srcDir}:amd64`, `oci:${join(tmp, 'c1')}:copied`, '--json');
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report).toMatchObject({
      digest: amd.digest,
      tag: 'copied',
      blobs: { uploaded: 3, mounted: 0, exists: 0 },
    });
    const dst = await openLayoutStore(join(tmp, 'c1'));
    expect((await dst.getManifest('copied')).bytes.equals(amd.bytes)).toBe(true);
  });

  it('copies an index with --all, or one platform with --platform', async () => {
    const all = await runCli('image', 'copy', '--all', `oci:${srcDir}:multi`, `oci:${join(tmp, 'c2')}:multi`);
    expect(all.code).toBe(0);
    expect(all.out).toContain(indexDigest);
    const one = await runCli(
      'image',
      'copy',
      `oci:${srcDir}:multi`,
      `oci:${join(tmp, 'c3')}`,
      '--platform',
      'linux/arm64',
    );
    expect(one.code).toBe(0);
    expect(one.out).toMatch(/selected: +linux\/arm64/);
    expect((await (await openLayoutStore(join(tmp, 'c3'))).resolve('latest'))?.digest).toBe(arm.digest);
    const both = await runCli(
      'image',
      'copy',
      '--all',
      '--platform',
      'linux/amd64',
      `oci:${srcDir}:multi`,
      `oci:${join(tmp, 'c4')}`,
    );
    expect(both.code).toBe(1);
    expect(both.err).toMatch(/--all and --platform/);
  });

  it('inspects an image: human, --json and --raw', async () => {
    const human = await runCli('image', 'inspect', `oci:${srcDir}:amd64`);
    expect(human.code).toBe(0);
    expect(human.out).toContain(`Digest:     ${amd.digest}`);
    expect(human.out).toContain('Platform:   linux/amd64');
    expect(human.out).toMatch(/Layers: +2 \(/);
    expect(human.out).toContain('Entrypoint: ["/bin/app"]');
    expect(human.out).toContain('  MODE=test');
    expect(human.out).toContain('  io.packfarm.example=yes');
    const json = JSON.parse((await runCli('image', 'inspect', `oci:${srcDir}:amd64`, '--json')).out);
    expect(json).toMatchObject({ kind: 'image', digest: amd.digest, platform: 'linux/amd64' });
    expect(json.layers).toHaveLength(2);
    expect(json.config.env).toEqual(['PATH=/bin', 'MODE=test']);
    const raw = await runCli('image', 'inspect', `oci:${srcDir}:amd64`, '--raw');
    expect(raw.out).toBe(amd.bytes.toString());
  });

  it('inspects an index with its platforms', async () => {
    const r = await runCli('image', 'inspect', `oci:${srcDir}:multi`);
    expect(r.out).toContain(`Media type: ${MediaType.ociIndex}`);
    expect(r.out).toMatch(new RegExp(`linux/amd64 +${amd.digest}`));
    expect(r.out).toMatch(new RegExp(`linux/arm64 +${arm.digest}`));
  });

  it('prints errors with their hint, or as JSON', async () => {
    const missing = await runCli('image', 'inspect', `oci:${join(tmp, 'nope')}:x`);
    expect(missing.code).toBe(1);
    expect(missing.err).toMatch(/^error: .*nope is not an OCI image layout/);
    expect(missing.err).toContain('hint:');
    const json = await runCli('image', 'inspect', `oci:${srcDir}:absent`, '--json');
    expect(JSON.parse(json.err)).toMatchObject({ error: { code: 'MANIFEST_UNKNOWN' } });
    const usage = await runCli('image', 'copy', 'only-one-arg');
    expect(usage.code).not.toBe(0);
    expect(usage.err).toMatch(/missing required argument/);
  });
});

describe('packfarm manifest (in-process, layouts)', () => {
  it('create → add → annotate → inspect → push → remove', async () => {
    const list = 'example.com/team/app:1';
    expect((await runCli('manifest', 'create', list, `oci:${srcDir}:arm64`)).code).toBe(0);
    const again = await runCli('manifest', 'create', list);
    expect(again.code).toBe(1);
    expect(again.err).toMatch(/already exists/);
    const added = await runCli(
      'manifest',
      'add',
      list,
      `oci:${srcDir}:amd64`,
      '--annotations',
      'tier=gold',
      '--json',
    );
    expect(added.code).toBe(0);
    expect(JSON.parse(added.out).added[0]).toMatchObject({
      digest: amd.digest,
      annotations: { tier: 'gold' },
    });
    const annotated = await runCli('manifest', 'annotate', list, amd.digest, '--variant', 'v2');
    expect(annotated.code).toBe(0);
    expect(annotated.out).toContain('linux/amd64/v2');

    const inspected = await runCli('manifest', 'inspect', list);
    const doc = JSON.parse(inspected.out);
    assertOciValid('index', doc);
    expect(doc.manifests.map((m: { digest: string }) => m.digest)).toEqual([amd.digest, arm.digest]);
    expect(doc.manifests[0].platform).toEqual({ os: 'linux', architecture: 'amd64', variant: 'v2' });
    const raw = (await runCli('manifest', 'inspect', list, '--raw')).out;
    const dockerView = await runCli('manifest', 'inspect', list, '--format', 'docker');
    expect(dockerView.code).toBe(1);
    expect(dockerView.err).toMatch(/Docker manifest list can only hold Docker image manifests/);

    const dest = join(tmp, 'pushed');
    const pushed = await runCli('manifest', 'push', list, `oci:${dest}:1`, '--json');
    expect(pushed.code).toBe(0);
    const report = JSON.parse(pushed.out);
    const layout = await openLayoutStore(dest);
    const stored = await layout.getManifest('1');
    expect(stored.digest).toBe(report.digest);
    expect(stored.bytes.toString()).toBe(raw);

    expect((await runCli('manifest', 'rm', list, amd.digest)).out).toContain(`Removed ${amd.digest}`);
    expect((await runCli('manifest', 'remove', list)).out).toContain(`Deleted manifest list ${list}`);
    expect((await runCli('manifest', 'inspect', list)).code).toBe(1);
  });
});

describe('packfarm as a process', () => {
  it('builds with tsc and copies an index between layouts from bin/packfarm.js', async () => {
    const tsc = await execa('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: repoRoot, reject: false });
    expect(tsc.exitCode, `tsc -p tsconfig.build.json failed:\n${tsc.stdout}\n${tsc.stderr}`).toBe(0);
    const dest = join(tmp, 'bin-copy');
    const r = await execa(
      process.execPath,
      [
        join(repoRoot, 'bin', 'packfarm.js'),
        'image',
        'copy',
        '--all',
        `oci:${srcDir}:multi`,
        `oci:${dest}:m`,
        '--json',
      ],
      { reject: false, env: { PACKFARM_HOME: join(tmp, 'home') } },
    );
    expect(r.stderr).toBe('');
    expect(r.exitCode).toBe(0);
    expect(JSON.parse(r.stdout).digest).toBe(indexDigest);
    const index = JSON.parse(await readFile(join(dest, 'index.json'), 'utf8'));
    expect(index.manifests).toEqual([expect.objectContaining({ digest: indexDigest })]);
    const bad = await execa(
      process.execPath,
      [join(repoRoot, 'bin', 'packfarm.js'), 'image', 'inspect', 'oci:/definitely/not/here:x'],
      {
        reject: false,
      },
    );
    expect(bad.exitCode).toBe(1);
    expect(bad.stderr).toMatch(/not an OCI image layout/);
  });

  it('lets several packfarm processes copy into one layout at once without losing a tag', async () => {
    // Runs after the build above (tests in a file run in order).
    const dest = join(tmp, 'shared-dest');
    const jobs = ['amd64', 'arm64', 'multi', 'amd64', 'arm64', 'multi'].map((tag, i) =>
      execa(
        process.execPath,
        [
          join(repoRoot, 'bin', 'packfarm.js'),
          'image',
          'copy',
          '--all',
          `oci:${srcDir}:${tag}`,
          `oci:${dest}:t${i}`,
        ],
        { reject: false },
      ),
    );
    const results = await Promise.all(jobs);
    for (const r of results) expect(r.exitCode, r.stderr).toBe(0);
    const layout = await openLayoutStore(dest);
    expect(await layout.listTags()).toEqual(['t0', 't1', 't2', 't3', 't4', 't5']);
    expect((await layout.resolve('t2'))?.digest).toBe(indexDigest);
    const index = JSON.parse(await readFile(join(dest, 'index.json'), 'utf8'));
    assertOciValid('index', index);
    // Only the six tags: children of the index were folded into it.
    expect(index.manifests).toHaveLength(6);
  });
});
