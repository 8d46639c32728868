import {
  chmod,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  readlink,
  rm,
  stat,
  symlink,
  writeFile,
} from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appFileFilter, syncAppDir } from './app-files.js';

describe('appFileFilter', () => {
  it('is undefined with neither include nor exclude', () => {
    expect(appFileFilter({})).toBeUndefined();
  });

  it('refuses include and exclude together, naming the file', () => {
    expect(() => appFileFilter({ include: ['a'], exclude: ['b'] }, '/p/project.toml')).toThrow(
      /\/p\/project.toml: include and exclude cannot both be set/,
    );
  });

  it('excludes like .gitignore: names at any depth, anchored paths, dir-only, globs, negation', () => {
    const f = appFileFilter({
      exclude: ['node_modules/', '/README.md', '*.log', 'docs/**/*.png', '!keep.log'],
    });
    expect(f).toBeDefined();
    const keep = f as (r: string, d: boolean) => boolean;
    expect(keep('node_modules', true)).toBe(false);
    expect(keep('a/node_modules/x.js', false)).toBe(false);
    expect(keep('node_modules', false)).toBe(true); // a file of that name is not a directory
    expect(keep('README.md', false)).toBe(false);
    expect(keep('sub/README.md', false)).toBe(true);
    expect(keep('x.log', false)).toBe(false);
    expect(keep('deep/y.log', false)).toBe(false);
    expect(keep('keep.log', false)).toBe(true);
    expect(keep('docs/a/b/c.png', false)).toBe(false);
    expect(keep('docs/c.png', false)).toBe(false);
    expect(keep('docs/c.txt', false)).toBe(true);
    expect(keep('src/main.sh', false)).toBe(true);
  });

  it('includes only matching files, walking every directory', () => {
    const keep = appFileFilter({ include: ['src/', '*.sh'] }) as (r: string, d: boolean) => boolean;
    expect(keep('src/a/b.txt', false)).toBe(true);
    expect(keep('run.sh', false)).toBe(true);
    expect(keep('tools/x.sh', false)).toBe(true);
    expect(keep('README.md', false)).toBe(false);
    expect(keep('other', true)).toBe(true);
  });
});

describe('syncAppDir', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'pf-appfiles-'));
    const app = join(root, 'app');
    await mkdir(join(app, 'sub', 'deep'), { recursive: true });
    await mkdir(join(app, 'skip'), { recursive: true });
    await writeFile(join(app, 'run.sh'), '#!/bin/sh\n', { mode: 0o755 });
    await writeFile(join(app, 'sub', 'deep', 'data'), 'x');
    await writeFile(join(app, 'skip', 'big'), 'y');
    await symlink('run.sh', join(app, 'link'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('copies files, modes and symlinks into an empty dir, leaving out what the filter excludes', async () => {
    const dest = join(root, 'ws');
    const r = await syncAppDir(join(root, 'app'), dest, appFileFilter({ exclude: ['skip'] }));
    expect((await readdir(dest)).sort()).toEqual(['link', 'run.sh', 'sub']);
    expect((await stat(join(dest, 'run.sh'))).mode & 0o777).toBe(0o755);
    expect(await readlink(join(dest, 'link'))).toBe('run.sh');
    expect(r).toEqual({ copied: 3, kept: 0, removed: 0 });
  });

  it('copies again only what changed, and removes what a build added or the app no longer has', async () => {
    const app = join(root, 'app');
    const dest = join(root, 'ws2');
    await syncAppDir(app, dest, undefined);
    // What a buildpack might do to the workspace:
    await writeFile(join(dest, 'sub', 'deep', 'data'), 'changed by a buildpack');
    await mkdir(join(dest, 'node_modules', 'x'), { recursive: true });
    await writeFile(join(dest, 'node_modules', 'x', 'index.js'), '');
    await chmod(join(dest, 'run.sh'), 0o644);
    const r = await syncAppDir(app, dest, undefined);
    expect(r).toEqual({ copied: 2, kept: 2, removed: 1 });
    expect(await readFile(join(dest, 'sub', 'deep', 'data'), 'utf8')).toBe('x');
    expect((await stat(join(dest, 'run.sh'))).mode & 0o777).toBe(0o755);
    expect((await readdir(dest)).sort()).toEqual(['link', 'run.sh', 'skip', 'sub']);
    // Unchanged: nothing to copy.
    expect(await syncAppDir(app, dest, undefined)).toEqual({ copied: 0, kept: 4, removed: 0 });
    // A file replaced by a directory of the same name in the app.
    await rm(join(app, 'skip', 'big'));
    await mkdir(join(app, 'skip', 'big'));
    const again = await syncAppDir(app, dest, undefined);
    expect(again.removed).toBe(1);
    expect((await stat(join(dest, 'skip', 'big'))).isDirectory()).toBe(true);
  });
});
