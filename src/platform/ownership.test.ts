import { chmod, chown, lstat, mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { chownFiles, chownTree, ensureOwner, ownerToApply, parseOwner } from './ownership.js';

/** Real files in a temp dir; handing files to another user needs root, as in a platform's build container. */
let root: string;
beforeAll(async () => {
  if (process.getuid?.() !== 0) throw new Error('ownership tests change file owners: run them as root');
  root = await mkdtemp(join(tmpdir(), 'pf-ownership-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const owner = async (p: string) => {
  const s = await lstat(p);
  return `${s.uid}:${s.gid}`;
};
const USER = { uid: 2222, gid: 3333 };

async function tree(name: string, uid: number, gid: number, mode: number) {
  const dir = join(root, name);
  await mkdir(join(dir, 'bp', 'layer'), { recursive: true });
  await writeFile(join(dir, 'bp', 'layer', 'file'), 'x');
  await symlink('/etc/hostname', join(dir, 'bp', 'link'));
  for (const p of [dir, join(dir, 'bp'), join(dir, 'bp', 'layer'), join(dir, 'bp', 'layer', 'file')]) {
    await chown(p, uid, gid);
    await chmod(p, mode);
  }
  return dir;
}

describe('ensureOwner', () => {
  it('re-owns a dir the user cannot write, recursively, symlinks themselves and not their targets', async () => {
    const dir = await tree('unwritable', 9999, 9999, 0o775);
    const target = await owner('/etc/hostname');
    await ensureOwner(USER, [dir, join(root, 'missing')]);
    for (const p of ['', 'bp', 'bp/layer', 'bp/layer/file', 'bp/link'])
      expect(await owner(join(dir, p)), p).toBe('2222:3333');
    expect(await owner('/etc/hostname')).toBe(target);
  });

  it('leaves a dir alone that the user owns, or may write through its group or as anyone', async () => {
    const own = await tree('owned', USER.uid, 9999, 0o755);
    await chown(join(own, 'bp'), 9999, 9999);
    const group = await tree('group-writable', 9999, USER.gid, 0o775);
    const world = await tree('world-writable', 9999, 9999, 0o777);
    await ensureOwner(USER, [own, group, world]);
    expect(await owner(join(own, 'bp'))).toBe('9999:9999');
    expect(await owner(join(group, 'bp'))).toBe(`9999:${USER.gid}`);
    expect(await owner(join(world, 'bp'))).toBe('9999:9999');
  });
});

describe('chownTree and chownFiles', () => {
  it('re-own whatever they are given, writable or not; missing paths and no owner are no-ops', async () => {
    const dir = await tree('files', USER.uid, USER.gid, 0o777);
    await chown(join(dir, 'bp', 'layer', 'file'), 0, 0);
    await chownTree(dir, USER);
    expect(await owner(join(dir, 'bp', 'layer', 'file'))).toBe('2222:3333');
    await chownFiles(undefined, [dir]);
    await chownFiles({ uid: 0, gid: 0 }, [
      join(dir, 'bp', 'layer', 'file'),
      join(root, 'missing'),
      undefined,
    ]);
    expect(await owner(join(dir, 'bp', 'layer', 'file'))).toBe('0:0');
  });
});

describe('ownerToApply / parseOwner', () => {
  it('applies only with both ids (as root) and refuses non-numbers with exit 3', () => {
    expect(ownerToApply('2222', '3333')).toEqual(USER);
    expect(ownerToApply('2222', undefined)).toBeUndefined();
    expect(ownerToApply('', '3333')).toBeUndefined();
    expect(() => parseOwner('cnb', '1000')).toThrow(/-uid\/-gid: expected non-negative integers/);
    expect(() => parseOwner('-1', '1000')).toThrow(/non-negative/);
  });
});
