import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { expandOrder } from './order.js';
import { createBuildpackStore } from './descriptor.js';
import { layeredBuildpackStore, stageBuildpack } from './source.js';

const FIXTURES = resolve('test/fixtures/buildpacks');
const PROCESSES = join(FIXTURES, 'build/test_processes/1.0.0');
const DETECT = join(FIXTURES, 'detect/buildpacks');

let tmp: string;
let scratch: string;
beforeAll(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-bp-source-'));
  scratch = join(tmp, 'scratch');
});
afterAll(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const tarOf = (args: string[]) => execFileSync('tar', args, { stdio: 'pipe' });

describe('stageBuildpack', () => {
  it('uses a directory in place, relative to cwd', async () => {
    const s = await stageBuildpack('build/test_processes/1.0.0', { cwd: FIXTURES, scratchDir: scratch });
    expect(s).toMatchObject({ id: 'test/processes', version: '1.0.0', dir: PROCESSES });
    expect(s.descriptor.sbomFormats).toEqual(['application/vnd.cyclonedx+json']);
    expect(s.descriptor.path).toBe(join(PROCESSES, 'buildpack.toml'));
  });

  it('extracts a .tgz with buildpack.toml at its root, keeping bin/ executable', async () => {
    const archive = join(tmp, 'processes.tgz');
    tarOf(['-czf', archive, '-C', PROCESSES, '.']);
    const s = await stageBuildpack(archive, { cwd: '/', scratchDir: scratch });
    expect(s.id).toBe('test/processes');
    expect(s.dir.startsWith(`${scratch}/`)).toBe(true);
    expect(s.descriptor.targetsFrom).toBe('targets');
    const bin = await readdir(join(s.dir, 'bin'));
    expect(bin).toContain('build');
    execFileSync('test', ['-x', join(s.dir, 'bin', 'build')]);
  });

  it('extracts a plain .tar whose buildpack sits under one top directory', async () => {
    const archive = join(tmp, 'npm.tar');
    tarOf(['-cf', archive, '-C', join(DETECT, 'test_npm'), '1.0.0']);
    const s = await stageBuildpack('npm.tar', { cwd: tmp, scratchDir: scratch });
    expect(s.id).toBe('test/npm');
    expect(s.dir.endsWith('/1.0.0')).toBe(true);
  });

  it('accepts file:// paths', async () => {
    const s = await stageBuildpack(`file://${PROCESSES}`, { cwd: '/', scratchDir: scratch });
    expect(s.id).toBe('test/processes');
  });

  it('refuses a missing path, a directory without buildpack.toml and an archive without one', async () => {
    await expect(stageBuildpack('nope', { cwd: tmp, scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDPACK_NOT_FOUND',
      message: expect.stringContaining(join(tmp, 'nope')),
    });
    const empty = join(tmp, 'empty');
    await mkdir(join(empty, 'a'), { recursive: true });
    await mkdir(join(empty, 'b'), { recursive: true });
    await expect(stageBuildpack(empty, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDPACK_NOT_FOUND',
      message: expect.stringContaining('no buildpack.toml'),
    });
    const archive = join(tmp, 'two-tops.tgz');
    tarOf(['-czf', archive, '-C', empty, 'a', 'b']);
    await expect(stageBuildpack(archive, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDPACK_NOT_FOUND',
      message: expect.stringContaining('single top directory'),
    });
  });

  it('refuses a file that is not an archive', async () => {
    const file = join(tmp, 'not-an-archive.tgz');
    await writeFile(file, 'hello, this is text and certainly not a tar archive at all\n'.repeat(20));
    await expect(stageBuildpack(file, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      code: 'BUILDPACK_ARCHIVE_INVALID',
    });
  });

  it('refuses an archive entry that would leave the scratch directory', async () => {
    const src = join(tmp, 'evil');
    await mkdir(src, { recursive: true });
    await writeFile(join(src, 'buildpack.toml'), 'api = "0.12"\n[buildpack]\nid = "x"\nversion = "1"\n');
    await symlink('/tmp', join(src, 'out'));
    const archive = join(tmp, 'evil.tar');
    // GNU tar keeps "out/x" behind the symlink "out": writing it would go through the link.
    tarOf(['-cf', archive, '-C', src, 'buildpack.toml', 'out']);
    await writeFile(join(tmp, 'x'), 'payload');
    tarOf(['-rf', archive, '-C', tmp, '--transform', 's,^x$,out/planted,', 'x']);
    await expect(stageBuildpack(archive, { cwd: '/', scratchDir: scratch })).rejects.toMatchObject({
      code: 'UNSAFE_LAYER_ENTRY',
    });
    await expect(readdir('/tmp')).resolves.not.toContain('planted');
  });

  it('refuses remote sources with a clear message', async () => {
    for (const [source, scheme] of [
      ['docker://example.com/bp:1', 'docker'],
      ['urn:cnb:registry:acme/x@1.0.0', 'urn'],
      ['https://example.com/bp.tgz', 'https'],
    ])
      await expect(stageBuildpack(source!, { cwd: tmp, scratchDir: scratch })).rejects.toMatchObject({
        code: 'BUILDPACK_SOURCE_UNSUPPORTED',
        message: expect.stringContaining(`${scheme}: buildpack sources are not supported yet`),
      });
  });
});

describe('layeredBuildpackStore', () => {
  it('answers staged buildpacks first, then the fallback, and expands a staged composite', async () => {
    const outer = await stageBuildpack(join(DETECT, 'test_outer/1.0.0'), { cwd: '/', scratchDir: scratch });
    const js = await stageBuildpack(join(DETECT, 'test_js/1.0.0'), { cwd: '/', scratchDir: scratch });
    const fallback = createBuildpackStore(DETECT);
    const store = layeredBuildpackStore([outer, js], fallback);
    expect(store.buildpacksDir).toBe(fallback.buildpacksDir);
    expect((await store.lookup('test/js', '1.0.0')).dir).toBe(js.dir);
    // test/unused is only in the fallback.
    expect((await store.lookup('test/unused', '1.0.0')).id).toBe('test/unused');
    const groups: string[][] = [];
    for await (const g of expandOrder(
      [{ group: [{ id: 'test/outer', version: '1.0.0', optional: false }] }],
      (id, v) => store.lookup(id, v),
    ))
      groups.push(g.map((e) => e.id));
    // test/outer (staged) → test/js (staged composite) → its children, from the fallback.
    expect(groups).toEqual([
      ['test/unused', 'test/node', 'test/npm'],
      ['test/unused', 'test/python'],
    ]);
  });

  it('prefers a staged buildpack over the fallback one of the same id@version', async () => {
    const copy = join(tmp, 'js-copy');
    tarOf(['-cf', join(tmp, 'js.tar'), '-C', join(DETECT, 'test_js/1.0.0'), '.']);
    await mkdir(copy, { recursive: true });
    tarOf(['-xf', join(tmp, 'js.tar'), '-C', copy]);
    const staged = await stageBuildpack(copy, { cwd: '/', scratchDir: scratch });
    const store = layeredBuildpackStore([staged], createBuildpackStore(DETECT));
    expect((await store.lookup('test/js', '1.0.0')).dir).toBe(copy);
  });

  it('without a fallback, a missing buildpack is a clear error', async () => {
    const js = await stageBuildpack(join(DETECT, 'test_js/1.0.0'), { cwd: '/', scratchDir: scratch });
    await expect(layeredBuildpackStore([js]).lookup('test/x', '2')).rejects.toMatchObject({
      code: 'BUILDPACK_NOT_FOUND',
      message: expect.stringContaining('test/x@2'),
    });
  });
});
