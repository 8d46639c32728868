import { mkdtemp, readlink, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { extractLayer } from '../archive/index.js';
import { openLayoutStore } from '../image/layout-store.js';
import { isPackfarmError } from '../util/errors.js';
import { writeBusyboxRunImage } from './busybox-run-image.js';

// A stand-in busybox: the image only copies the file, so any bytes show where they land.
let root: string;
let fakeBusybox: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-busybox-img-'));
  fakeBusybox = join(root, 'busybox');
  await writeFile(fakeBusybox, '#!fake busybox\n');
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('writeBusyboxRunImage', () => {
  it('writes a tagged image with the busybox rootfs, the cnb user and the given labels', async () => {
    const store = await openLayoutStore(join(root, 'a'), { create: true });
    const img = await writeBusyboxRunImage({
      store,
      tag: 'latest',
      busyboxPath: fakeBusybox,
      platform: { os: 'linux', architecture: 'arm64' },
      labels: { 'io.buildpacks.base.distro.name': 'demo' },
      extraFiles: { 'etc/os-release': 'ID=demo\n' },
    });
    expect((await store.resolve('latest'))?.digest).toBe(img.digest);
    const cfg = img.config.value as {
      architecture: string;
      config: { User: string; Env: string[]; Labels: Record<string, string> };
    };
    expect(cfg.architecture).toBe('arm64');
    expect(cfg.config.User).toBe('1000:1000');
    expect(cfg.config.Env).toEqual(['PATH=/usr/local/bin:/usr/bin:/bin']);
    expect(cfg.config.Labels).toEqual({
      'io.buildpacks.base.distro.name': 'demo',
      'io.buildpacks.base.distro.version': '1',
    });

    const layer = img.layers[0];
    if (!layer) throw new Error('no layer');
    const rootfs = join(root, 'rootfs');
    await extractLayer({ source: await store.getBlob(layer.digest), dest: rootfs });
    expect(await readFile(join(rootfs, 'bin/busybox'), 'utf8')).toBe('#!fake busybox\n');
    expect(await readlink(join(rootfs, 'bin/sh'))).toBe('busybox');
    expect(await readFile(join(rootfs, 'etc/passwd'), 'utf8')).toContain('cnb:x:1000:1000:');
    expect(await readFile(join(rootfs, 'etc/os-release'), 'utf8')).toBe('ID=demo\n');
    expect((await stat(join(rootfs, 'tmp'))).mode & 0o7777).toBe(0o1777);
  });

  it('gives the same digest for the same inputs, and leaves /bin/sh out on request', async () => {
    const write = async (dir: string, noShell?: boolean) =>
      writeBusyboxRunImage({
        store: await openLayoutStore(join(root, dir), { create: true }),
        tag: 'x',
        busyboxPath: fakeBusybox,
        ...(noShell ? { noShell } : {}),
      });
    const [one, two, noShell] = [await write('b1'), await write('b2'), await write('b3', true)];
    expect(two.digest).toBe(one.digest);
    expect(noShell.layers[0]?.diffId).not.toBe(one.layers[0]?.diffId);
  });

  it('names the missing busybox and the package to install', async () => {
    const store = await openLayoutStore(join(root, 'c'), { create: true });
    const err = await writeBusyboxRunImage({ store, tag: 'x', busyboxPath: join(root, 'nope') }).catch(
      (e: unknown) => e,
    );
    expect(isPackfarmError(err, 'BUSYBOX_MISSING')).toBe(true);
    expect((err as Error).message).toContain(join(root, 'nope'));
    expect((err as { hint?: string }).hint).toContain('apt-get install busybox-static');
  });
});
