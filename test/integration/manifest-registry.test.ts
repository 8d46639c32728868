import { mkdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { copyImage } from '../../src/image/copy.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { openImage } from '../../src/image/transport.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { runCli, usePackfarmHome } from '../helpers/cli.js';
import { type TestImage, writeTestImage } from '../helpers/images.js';
import { assertOciValid } from '../helpers/oci-schema.js';
import { privatePodman } from '../helpers/podman.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';

/**
 * `packfarm manifest create/add/annotate/inspect/push` end to end against a real registry, read back by
 * skopeo and podman.
 */
let registry: TestRegistry;
let tmp: string;
const images: Record<string, TestImage> = {};
let restoreHome: (() => void) | undefined;

const insecure = () => ['--insecure-registry', registry.host];

beforeAll(async () => {
  registry = await startRegistry({});
  tmp = join(tmpdir(), `packfarm-manifest-registry-${process.pid}-${Date.now().toString(36)}`);
  await mkdir(tmp);
  restoreHome = usePackfarmHome(join(tmp, 'home'));
  // Per-arch images pushed by tag, as separate builds would leave them.
  const layout = await openLayoutStore(join(tmp, 'src'), { create: true });
  for (const p of ['linux/amd64', 'linux/arm64', 'linux/arm/v7']) {
    const tag = p.replaceAll('/', '-');
    images[tag] = await writeTestImage(layout, { platform: p, tag });
    const dst = await openImage(`${registry.host}/team/app:${tag}`, { insecureRegistries: [registry.host] });
    await copyImage({ src: layout, srcTarget: tag, dst: dst.store, dstTag: tag });
  }
});
afterAll(async () => {
  restoreHome?.();
  await registry?.stop();
  await rm(tmp, { recursive: true, force: true });
});

describe('manifest lists against a registry', () => {
  it('create, add, annotate, inspect and push; skopeo reads the same bytes', async () => {
    const list = `${registry.host}/team/app:1`;
    const created = await runCli(
      'manifest',
      'create',
      list,
      `${registry.host}/team/app:linux-amd64`,
      ...insecure(),
    );
    expect(created.err).toBe('');
    expect(created.code).toBe(0);
    expect(
      (await runCli('manifest', 'add', list, `docker://${registry.host}/team/app:linux-arm64`, ...insecure()))
        .code,
    ).toBe(0);
    const armv7 = images['linux-arm-v7']!;
    expect(
      (
        await runCli(
          'manifest',
          'add',
          list,
          `${registry.host}/team/app:linux-arm-v7`,
          '--annotations',
          'k=v',
          ...insecure(),
        )
      ).code,
    ).toBe(0);
    const ann = await runCli(
      'manifest',
      'annotate',
      list,
      `${registry.host}/team/app:linux-arm64`,
      '--os-version',
      '1.0',
    );
    expect(ann.code).toBe(0);

    const inspected = await runCli('manifest', 'inspect', list, '--raw');
    const raw = inspected.out;
    assertOciValid('index', raw);
    const doc = JSON.parse(raw);
    expect(doc.manifests.map((m: { platform: { architecture: string } }) => m.platform.architecture)).toEqual(
      ['amd64', 'arm', 'arm64'],
    );
    expect(doc.manifests[1]).toMatchObject({ digest: armv7.digest, annotations: { k: 'v' } });
    expect(doc.manifests[2].platform['os.version']).toBe('1.0');

    const pushed = await runCli('manifest', 'push', list, ...insecure(), '--json');
    expect(pushed.err).toBe('');
    expect(pushed.code).toBe(0);
    const report = JSON.parse(pushed.out);
    expect(report.digest).toBe(sha256Digest(raw));
    // Same repository: nothing to upload, every child was already there.
    for (const c of report.children) expect(c.report.blobs.uploaded).toBe(0);

    const remote = (await execa('skopeo', ['inspect', '--raw', '--tls-verify=false', `docker://${list}`]))
      .stdout;
    expect(remote).toBe(raw);
    const back = join(tmp, 'back');
    await execa('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${list}`, `oci:${back}:1`]);
    const layout = await openLayoutStore(back);
    for (const img of Object.values(images))
      expect((await layout.getManifest(img.digest)).bytes.equals(img.bytes)).toBe(true);
  });

  it('gives the same index digest whatever the add order', async () => {
    const tags = ['linux-arm-v7', 'linux-amd64', 'linux-arm64'];
    const digests: string[] = [];
    for (const [i, order] of [tags, [...tags].reverse()].entries()) {
      const list = `${registry.host}/team/app:order-${i}`;
      expect((await runCli('manifest', 'create', list)).code).toBe(0);
      for (const t of order)
        expect(
          (await runCli('manifest', 'add', list, `${registry.host}/team/app:${t}`, ...insecure())).code,
        ).toBe(0);
      const r = await runCli('manifest', 'push', list, ...insecure(), '--json', '--purge');
      expect(r.code).toBe(0);
      digests.push(JSON.parse(r.out).digest);
    }
    expect(digests[1]).toBe(digests[0]);
    const remote = (
      await execa('skopeo', [
        'inspect',
        '--raw',
        '--tls-verify=false',
        `docker://${registry.host}/team/app:order-1`,
      ])
    ).stdout;
    expect(sha256Digest(remote)).toBe(digests[0]);
    // --purge removed the local lists.
    expect((await runCli('manifest', 'inspect', `${registry.host}/team/app:order-0`)).code).toBe(1);
  });

  it('pushes to another repository, mounting the children blobs, and podman pulls one platform from it', async () => {
    const list = `${registry.host}/team/app:2`;
    await runCli(
      'manifest',
      'create',
      list,
      `${registry.host}/team/app:linux-amd64`,
      `${registry.host}/team/app:linux-arm64`,
      ...insecure(),
    );
    const dest = `${registry.host}/elsewhere/app:2`;
    const r = await runCli('manifest', 'push', list, dest, ...insecure(), '--json');
    expect(r.err).toBe('');
    const report = JSON.parse(r.out);
    expect(report.mediaType).toBe(MediaType.ociIndex);
    for (const c of report.children) {
      expect(c.report.blobs.mounted).toBeGreaterThan(0);
      expect(c.report.blobs.uploaded).toBe(0);
    }
    const { podman, cleanup } = await privatePodman();
    try {
      await podman('pull', '-q', '--tls-verify=false', '--platform', 'linux/arm64', dest);
      const info = JSON.parse(await podman('image', 'inspect', dest))[0];
      expect(info.Architecture).toBe('arm64');
    } finally {
      await cleanup();
    }
  });

  it('refuses a Docker list of OCI images before pushing anything', async () => {
    const list = `${registry.host}/team/app:3`;
    await runCli('manifest', 'create', list, `${registry.host}/team/app:linux-amd64`, ...insecure());
    const r = await runCli('manifest', 'push', list, '--format', 'docker', ...insecure());
    expect(r.code).toBe(1);
    expect(r.err).toMatch(/Docker manifest list/);
    const tags = (
      await execa('skopeo', ['list-tags', '--tls-verify=false', `docker://${registry.host}/team/app`])
    ).stdout;
    expect(JSON.parse(tags).Tags).not.toContain('3');
  });
});
