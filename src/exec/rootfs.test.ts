import { mkdir, mkdtemp, rm, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { ImageConfig } from '../oci/schemas.js';
import { isPackfarmError } from '../util/errors.js';
import { buildImageConfig, envRecord } from './rootfs.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-rootfs-unit-'));
  await mkdir(join(root, 'etc'), { recursive: true });
  await writeFile(
    join(root, 'etc', 'passwd'),
    'root:x:0:0:root:/root:/bin/sh\nbuilder:x:1001:1001::/home/builder:/bin/sh\ncnb:x:1000:1000::/home/cnb:/bin/sh\n',
  );
  await writeFile(join(root, 'etc', 'group'), 'root:x:0:\nstaff:x:50:\n');
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

const config = (c: NonNullable<ImageConfig['config']>): ImageConfig => ({
  os: 'linux',
  architecture: 'amd64',
  rootfs: { type: 'layers', diff_ids: [] },
  config: c,
});

describe('build image config', () => {
  it('takes the build user from CNB_USER_ID/CNB_GROUP_ID, HOME from /etc/passwd, keeps the Env', async () => {
    const c = await buildImageConfig(
      config({ Env: ['PATH=/cnb/bin:/bin', 'CNB_USER_ID=1000', 'CNB_GROUP_ID=1000', 'A=1=2'], User: 'root' }),
      root,
      'img',
    );
    expect(c).toMatchObject({ uid: 1000, gid: 1000, user: 'root' });
    expect(c.env).toEqual({
      PATH: '/cnb/bin:/bin',
      CNB_USER_ID: '1000',
      CNB_GROUP_ID: '1000',
      A: '1=2',
      HOME: '/home/cnb',
    });
  });

  it('falls back to the config User (a name or uid[:gid]) and adds a default PATH', async () => {
    const named = await buildImageConfig(config({ User: 'builder' }), root, 'img');
    expect(named).toMatchObject({ uid: 1001, gid: 1001, env: { HOME: '/home/builder' } });
    expect(named.env.PATH).toMatch(/\/usr\/bin/);
    expect(await buildImageConfig(config({ User: '1000:staff' }), root, 'img')).toMatchObject({
      uid: 1000,
      gid: 50,
    });
  });

  it('refuses a build image without a non-root build user, and a non-numeric CNB_USER_ID', async () => {
    for (const c of [config({}), config({ User: '0:0' }), config({ User: 'nobody-here' })]) {
      const err = await buildImageConfig(c, root, 'img').catch((e) => e);
      expect(isPackfarmError(err, 'BUILD_IMAGE_NO_CNB_USER'), JSON.stringify(c.config)).toBe(true);
      expect(err.hint).toMatch(/CNB_USER_ID/);
    }
    const bad = await buildImageConfig(config({ Env: ['CNB_USER_ID=cnb'] }), root, 'img').catch((e) => e);
    expect(isPackfarmError(bad, 'BUILD_IMAGE_INVALID')).toBe(true);
  });

  it('does not follow an /etc/passwd symlink out of the root filesystem', async () => {
    const other = await mkdtemp(join(tmpdir(), 'packfarm-rootfs-link-'));
    try {
      await mkdir(join(other, 'etc'));
      await symlink('/etc/passwd', join(other, 'etc', 'passwd'));
      const c = await buildImageConfig(
        config({ Env: ['CNB_USER_ID=0', 'CNB_GROUP_ID=0'] }),
        other,
        'img',
      ).catch((e) => e);
      expect(isPackfarmError(c, 'BUILD_IMAGE_NO_CNB_USER')).toBe(true);
      const d = await buildImageConfig(config({ User: 'root' }), other, 'img').catch((e) => e);
      // "root" cannot be resolved: the host's /etc/passwd was not read.
      expect(d.message).toMatch(/cannot be resolved/);
    } finally {
      await rm(other, { recursive: true, force: true });
    }
  });

  it('parses Env entries, later ones winning', () => {
    expect(envRecord(['A=1', 'B', 'A=2', '=x'])).toEqual({ A: '2' });
  });
});
