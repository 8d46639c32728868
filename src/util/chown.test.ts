import { chmod, chown, lstat, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chownTree } from './chown.js';

/** Real files in a temp dir; handing files to another user needs root. */
let root: string;
beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('chown tests change file owners: run them as root');
  root = await mkdtemp(join(tmpdir(), 'pf-chown-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const USER = { uid: 2222, gid: 3333 };
const owner = async (p: string) => {
  const s = await lstat(p);
  return `${s.uid}:${s.gid}`;
};

async function tree(name: string) {
  const dir = join(root, name);
  await mkdir(join(dir, 'sub'), { recursive: true });
  await writeFile(join(dir, 'sub', 'file'), 'x');
  await writeFile(join(dir, 'sub', 'suid'), 'x');
  await chown(join(dir, 'sub', 'suid'), USER.uid, USER.gid);
  await chmod(join(dir, 'sub', 'suid'), 0o4755);
  await symlink('/etc/hostname', join(dir, 'link'));
  return dir;
}

describe('chownTree', () => {
  it('re-owns a whole tree, symlinks themselves and not their targets', async () => {
    const dir = await tree('all');
    const target = await owner('/etc/hostname');
    await chownTree(dir, USER);
    for (const p of ['', 'sub', 'sub/file', 'sub/suid', 'link'])
      expect(await owner(join(dir, p)), p).toBe('2222:3333');
    expect(await owner('/etc/hostname')).toBe(target);
    // A chown to the same owner still clears setuid: what keepOwned avoids.
    expect((await lstat(join(dir, 'sub', 'suid'))).mode & 0o4000).toBe(0);
  });

  it('with keepOwned leaves entries that already have the owner untouched', async () => {
    const dir = await tree('keep');
    await chownTree(dir, USER, { keepOwned: true });
    expect(await owner(join(dir, 'sub', 'file'))).toBe('2222:3333');
    expect((await lstat(join(dir, 'sub', 'suid'))).mode & 0o4000).toBe(0o4000);
  });

  it('without recursive re-owns the path alone', async () => {
    const dir = await tree('flat');
    await chownTree(dir, USER, { recursive: false });
    expect(await owner(dir)).toBe('2222:3333');
    expect(await owner(join(dir, 'sub'))).toBe('0:0');
  });

  it('throws ENOENT for a missing path unless missingOk', async () => {
    const missing = join(root, 'missing');
    await expect(chownTree(missing, USER)).rejects.toMatchObject({ code: 'ENOENT', path: missing });
    await expect(chownTree(missing, USER, { missingOk: true })).resolves.toBeUndefined();
  });
});
