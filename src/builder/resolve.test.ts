import { execFileSync } from 'node:child_process';
import { cp, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { resolveBuilder } from './resolve.js';

const DETECT = resolve('test/fixtures/buildpacks/detect/buildpacks');
const BUILD = resolve('test/fixtures/buildpacks/build');

let tmp: string;
let scratch: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-builder-resolve-'));
  scratch = join(tmp, 'scratch');
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

async function builderDir(name: string, toml: string): Promise<string> {
  const dir = join(tmp, name);
  await mkdir(dir, { recursive: true });
  await writeFile(join(dir, 'builder.toml'), toml);
  return dir;
}

describe('resolveBuilder: builder.toml directory', () => {
  it('stages directory and archive buildpacks, fills in order versions, reads [run] images', async () => {
    const dir = await builderDir(
      'b1',
      `[[buildpacks]]
uri = "${join(DETECT, 'test_node/1.0.0')}"
[[buildpacks]]
id = "test/processes"
uri = "bp/processes.tgz"
[[order]]
[[order.group]]
id = "test/node"
[[order.group]]
id = "test/processes"
version = "1.0.0"
optional = true
[run]
[[run.images]]
image = "registry.example/run:jammy"
mirrors = ["mirror.example/run:jammy"]
[build]
image = "registry.example/build:jammy"
`,
    );
    await mkdir(join(dir, 'bp'));
    execFileSync('tar', [
      '-czf',
      join(dir, 'bp/processes.tgz'),
      '-C',
      join(BUILD, 'test_processes/1.0.0'),
      '.',
    ]);

    const b = await resolveBuilder('b1', { cwd: tmp, scratchDir: scratch });
    expect(b.name).toBe('b1');
    expect(b.runImages).toEqual(['registry.example/run:jammy', 'mirror.example/run:jammy']);
    expect(b.order).toEqual({
      order: [
        {
          group: [
            { id: 'test/node', version: '1.0.0', optional: false },
            { id: 'test/processes', version: '1.0.0', optional: true },
          ],
        },
      ],
    });
    expect((await b.store.lookup('test/node', '1.0.0')).dir).toBe(join(DETECT, 'test_node/1.0.0'));
    const processes = await b.store.lookup('test/processes', '1.0.0');
    expect(processes.dir.startsWith(`${scratch}/`)).toBe(true);
    await expect(b.store.lookup('test/npm', '1.0.0')).rejects.toMatchObject({ code: 'BUILDPACK_NOT_FOUND' });
    expect(await readdir(scratch)).toHaveLength(1);
    await b.cleanup();
    expect(await readdir(scratch)).toHaveLength(0);
  });

  it('accepts the builder.toml path itself and the legacy [stack] run image', async () => {
    const dir = await builderDir(
      'b2',
      `[[buildpacks]]
uri = "file://${join(DETECT, 'test_python/1.0.0')}"
[[order]]
[[order.group]]
id = "test/python"
[stack]
id = "x"
run-image = "r:1"
run-image-mirrors = ["m:1"]
`,
    );
    const b = await resolveBuilder(join(dir, 'builder.toml'), { cwd: '/', scratchDir: scratch });
    expect(b.runImages).toEqual(['r:1', 'm:1']);
    expect(b.order.order[0]?.group[0]).toEqual({ id: 'test/python', version: '1.0.0', optional: false });
    await b.cleanup();
  });

  it('refuses https: buildpacks, unknown or ambiguous order entries, naming file and field', async () => {
    // docker://, oci: and .cnb buildpackages are read (test/integration/buildpack-package.test.ts); a download
    // URL is not.
    const remote = await builderDir('b3', '[[buildpacks]]\nuri = "https://example.com/bp.tgz"\n');
    await expect(resolveBuilder(remote, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDER_UNSUPPORTED',
      message: expect.stringMatching(
        /b3\/builder\.toml: buildpacks\[0\]\.uri: .*https: buildpack URIs are not supported/,
      ),
    });

    const missing = await builderDir(
      'b4',
      `[[buildpacks]]\nuri = "${join(DETECT, 'test_node/1.0.0')}"\n[[order]]\n[[order.group]]\nid = "test/npm"\n`,
    );
    await expect(resolveBuilder(missing, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      code: 'INVALID_BUILDER_TOML',
      message: expect.stringMatching(
        /b4\/builder\.toml: order\[0\]\.group\[0\]: buildpack test\/npm is not among/,
      ),
    });

    // Two versions of one ID: a copy of test/node relabelled 2.0.0.
    const v2 = join(tmp, 'node-2');
    await cp(join(DETECT, 'test_node/1.0.0'), v2, { recursive: true });
    const toml = join(v2, 'buildpack.toml');
    execFileSync('sed', ['-i', 's/^version = "1.0.0"/version = "2.0.0"/', toml]);
    const ambiguous = await builderDir(
      'b5',
      `[[buildpacks]]\nuri = "${join(DETECT, 'test_node/1.0.0')}"\n[[buildpacks]]\nuri = "${v2}"\n[[order]]\n[[order.group]]\nid = "test/node"\n`,
    );
    await expect(resolveBuilder(ambiguous, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      message: expect.stringMatching(
        /order\[0\]\.group\[0\]: buildpack test\/node has several versions \(1\.0\.0, 2\.0\.0\)/,
      ),
    });

    const wrongId = await builderDir(
      'b6',
      `[[buildpacks]]\nid = "test/other"\nuri = "${join(DETECT, 'test_node/1.0.0')}"\n[[order]]\n[[order.group]]\nid = "test/node"\n`,
    );
    await expect(resolveBuilder(wrongId, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      message: expect.stringMatching(/buildpacks\[0\]\.id: "test\/other" but .*says "test\/node"/),
    });
    const badUri = await builderDir('b7', '[[buildpacks]]\nuri = "nope"\n');
    await expect(resolveBuilder(badUri, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDPACK_NOT_FOUND',
      message: expect.stringMatching(/b7\/builder\.toml: buildpacks\[0\]\.uri: .*b7\/nope does not exist/),
    });
    // Every failure cleaned up what it had staged.
    expect(await readdir(scratch)).toHaveLength(0);
  });
});

describe('resolveBuilder: /cnb-like directory', () => {
  it('uses order.toml, buildpacks/ and run.toml in place', async () => {
    const cnb = join(tmp, 'cnb-like');
    await mkdir(cnb, { recursive: true });
    await cp(DETECT, join(cnb, 'buildpacks'), { recursive: true });
    await writeFile(
      join(cnb, 'order.toml'),
      '[[order]]\n[[order.group]]\nid = "test/js"\nversion = "1.0.0"\n',
    );
    await writeFile(join(cnb, 'run.toml'), '[[images]]\nimage = "run:1"\nmirrors = ["m/run:1"]\n');
    const b = await resolveBuilder(cnb, { cwd: '/', scratchDir: scratch });
    expect(b.order.order).toEqual([{ group: [{ id: 'test/js', version: '1.0.0' }] }]);
    expect(b.runImages).toEqual(['run:1', 'm/run:1']);
    expect(b.store.buildpacksDir).toBe(join(cnb, 'buildpacks'));
    expect((await b.store.lookup('test/npm', '1.0.0')).id).toBe('test/npm');
    await b.cleanup();
    expect(await readdir(join(cnb, 'buildpacks'))).toContain('test_js');

    // A root filesystem holding cnb/, without run.toml: no run images.
    const rootfs = join(tmp, 'rootfs');
    await mkdir(rootfs, { recursive: true });
    await cp(cnb, join(rootfs, 'cnb'), { recursive: true });
    await rm(join(rootfs, 'cnb', 'run.toml'));
    const r = await resolveBuilder('./rootfs', { cwd: tmp, scratchDir: scratch });
    expect(r.runImages).toEqual([]);
    expect(r.store.buildpacksDir).toBe(join(rootfs, 'cnb', 'buildpacks'));
  });

  it('reads a legacy stack.toml run image when there is no run.toml', async () => {
    const cnb = join(tmp, 'cnb-stack');
    await mkdir(join(cnb, 'buildpacks'), { recursive: true });
    await writeFile(join(cnb, 'order.toml'), '[[order]]\n[[order.group]]\nid = "a"\nversion = "1"\n');
    await writeFile(join(cnb, 'stack.toml'), '[run-image]\nimage = "old/run:1"\nmirrors = ["m/old:1"]\n');
    const b = await resolveBuilder(cnb, { cwd: '/', scratchDir: scratch });
    expect(b.runImages).toEqual(['old/run:1', 'm/old:1']);
  });

  it('refuses a directory that is no builder, and a missing path', async () => {
    const empty = join(tmp, 'not-a-builder');
    await mkdir(empty, { recursive: true });
    await expect(resolveBuilder(empty, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDER_INVALID',
      message: expect.stringContaining('neither builder.toml nor order.toml'),
    });
    await expect(resolveBuilder('./missing', { cwd: tmp, scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDER_NOT_FOUND',
      message: expect.stringContaining(join(tmp, 'missing')),
    });
    const noBuildpacks = join(tmp, 'no-bps');
    await mkdir(noBuildpacks, { recursive: true });
    await writeFile(
      join(noBuildpacks, 'order.toml'),
      '[[order]]\n[[order.group]]\nid = "a"\nversion = "1"\n',
    );
    await expect(resolveBuilder(noBuildpacks, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDER_INVALID',
      message: expect.stringContaining('buildpacks is missing'),
    });
  });
});
