import { mkdir, mkdtemp, readdir, readlink, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { appFileFilter, copyAppDir } from './app-files.js';

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

describe('copyAppDir', () => {
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

  it('copies files, modes and symlinks, leaving out what the filter excludes', async () => {
    const dest = join(root, 'ws');
    const r = await copyAppDir(join(root, 'app'), dest, appFileFilter({ exclude: ['skip'] }));
    expect((await readdir(dest)).sort()).toEqual(['link', 'run.sh', 'sub']);
    expect((await stat(join(dest, 'run.sh'))).mode & 0o777).toBe(0o755);
    expect(await readlink(join(dest, 'link'))).toBe('run.sh');
    expect(r.files).toBe(3);
  });
});
