import { mkdir, rm } from 'node:fs/promises';
import { type IncomingHttpHeaders, type Server, createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type LayoutStore, openLayoutStore } from '../../src/image/layout-store.js';
import { sha256Digest } from '../../src/oci/digest.js';
import { hostPlatform } from '../../src/oci/platform.js';
import { runCli } from '../helpers/cli.js';
import { type TestImage, writeTestImage, writeTestIndex } from '../helpers/images.js';
import { privatePodman } from '../helpers/podman.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';

/**
 * `packfarm image copy/inspect` against a real registry (Debian's docker-registry on 127.0.0.1), checked
 * with skopeo and podman as independent readers.
 */
let registry: TestRegistry;
let tmp: string;
let srcDir: string;
let src: LayoutStore;
let amd: TestImage;
let arm: TestImage;
let index: { digest: string; bytes: Buffer };

async function skopeo(...args: string[]): Promise<string> {
  return (await execa('skopeo', args)).stdout;
}

beforeAll(async () => {
  registry = await startRegistry({});
  // Lower-case: podman derives names from paths in some transports.
  tmp = join(tmpdir(), `packfarm-image-registry-${process.pid}-${Date.now().toString(36)}`);
  await mkdir(tmp);
  srcDir = join(tmp, 'src');
  src = await openLayoutStore(srcDir, { create: true });
  amd = await writeTestImage(src, {
    platform: 'linux/amd64',
    tag: 'amd64',
    layers: [{ 'a.txt': 'a\n' }, { 'b.txt': 'b\n' }],
  });
  arm = await writeTestImage(src, { platform: 'linux/arm64', tag: 'arm64' });
  index = await writeTestIndex(src, [amd, arm], { tag: 'multi' });
});
afterAll(async () => {
  await registry?.stop();
  await rm(tmp, { recursive: true, force: true });
});

describe('image copy to and from a registry', () => {
  it('pushes a layout image that skopeo and podman read with the same digest', async () => {
    const ref = `${registry.host}/team/app:v1`;
    const r = await runCli(
      'image',
      'copy',
      `oci:${srcDir}:amd64`,
      ref,
      '--insecure-registry',
      registry.host,
      '--json',
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(JSON.parse(r.out)).toMatchObject({ digest: amd.digest, blobs: { uploaded: 3 } });

    const info = JSON.parse(await skopeo('inspect', '--tls-verify=false', `docker://${ref}`));
    expect(info.Digest).toBe(amd.digest);
    expect(info.Layers).toEqual(amd.layers.map((l) => l.digest));
    const raw = await skopeo('inspect', '--raw', '--tls-verify=false', `docker://${ref}`);
    expect(Buffer.from(raw).equals(amd.bytes)).toBe(true);

    const { podman, cleanup } = await privatePodman();
    try {
      await podman('pull', '-q', '--tls-verify=false', ref);
      const pulled = JSON.parse(await podman('image', 'inspect', ref))[0];
      expect(pulled.Digest).toBe(amd.digest);
      expect(pulled.RootFS.Layers).toEqual(JSON.parse(amd.config.bytes.toString()).rootfs.diff_ids);
    } finally {
      await cleanup();
    }
  });

  it('copies registry → layout byte for byte, and skips everything the second time', async () => {
    const ref = `${registry.host}/team/app:v1`;
    const out = join(tmp, 'pulled');
    const first = await runCli(
      'image',
      'copy',
      ref,
      `oci:${out}:v1`,
      '--insecure-registry',
      registry.host,
      '--json',
    );
    expect(first.code).toBe(0);
    const layout = await openLayoutStore(out);
    expect((await layout.getManifest('v1')).bytes.equals(amd.bytes)).toBe(true);
    const second = JSON.parse(
      (await runCli('image', 'copy', ref, `oci:${out}:v1`, '--insecure-registry', registry.host, '--json'))
        .out,
    );
    expect(second.blobs.uploaded).toBe(0);
    expect(second.manifests).toEqual({ pushed: 0, exists: 1 });
  });

  it('mounts blobs across repositories of one registry', async () => {
    registry.resetCounters();
    const r = await runCli(
      'image',
      'copy',
      `${registry.host}/team/app:v1`,
      `${registry.host}/other/app:v1`,
      '--insecure-registry',
      registry.host,
      '--json',
    );
    expect(r.code).toBe(0);
    const report = JSON.parse(r.out);
    expect(report.blobs).toEqual({ uploaded: 0, mounted: 3, exists: 0 });
    expect(report.bytesUploaded).toBe(0);
    // What the registry saw: three mounts, no blob bytes sent.
    expect(registry.counters().mounts).toBe(3);
    expect(registry.counters().blobUploads).toBe(0);
  });

  it('copies a whole index with --all (children by digest first, same index digest)', async () => {
    const ref = `${registry.host}/team/multi:1`;
    // CNB_INSECURE_REGISTRIES works like the flag.
    process.env.CNB_INSECURE_REGISTRIES = registry.host;
    try {
      const r = await runCli('image', 'copy', '--all', `oci:${srcDir}:multi`, ref, '--json');
      expect(r.err).toBe('');
      expect(JSON.parse(r.out).digest).toBe(index.digest);
    } finally {
      delete process.env.CNB_INSECURE_REGISTRIES;
    }
    const raw = await skopeo('inspect', '--raw', '--tls-verify=false', `docker://${ref}`);
    expect(sha256Digest(raw)).toBe(index.digest);
    const back = join(tmp, 'skopeo-all');
    await execa('skopeo', ['copy', '--all', '--src-tls-verify=false', `docker://${ref}`, `oci:${back}:m`]);
    const layout = await openLayoutStore(back);
    for (const child of [amd, arm])
      expect((await layout.getManifest(child.digest)).bytes.equals(child.bytes)).toBe(true);
  });

  it('without --all copies only the host platform out of a registry index', async () => {
    const out = join(tmp, 'one-platform');
    const r = await runCli(
      'image',
      'copy',
      `${registry.host}/team/multi:1`,
      `oci:${out}:x`,
      '--insecure-registry',
      registry.host,
    );
    expect(r.code).toBe(0);
    const want = hostPlatform().architecture === 'arm64' ? arm : amd;
    expect((await (await openLayoutStore(out)).resolve('x'))?.digest).toBe(want.digest);
  });

  it('inspects a registry index and image', async () => {
    const idx = JSON.parse(
      (
        await runCli(
          'image',
          'inspect',
          `${registry.host}/team/multi:1`,
          '--json',
          '--insecure-registry',
          registry.host,
        )
      ).out,
    );
    expect(idx.kind).toBe('index');
    expect(idx.manifests.map((m: { platform: string }) => m.platform)).toEqual([
      'linux/amd64',
      'linux/arm64',
    ]);
    const img = await runCli(
      'image',
      'inspect',
      `docker://${registry.host}/team/app:v1`,
      '--insecure-registry',
      registry.host,
    );
    expect(img.out).toContain('Platform:   linux/amd64');
    const raw = await runCli(
      'image',
      'inspect',
      `${registry.host}/team/app:v1`,
      '--raw',
      '--insecure-registry',
      registry.host,
    );
    expect(raw.out).toBe(amd.bytes.toString());
    const missing = await runCli(
      'image',
      'inspect',
      `${registry.host}/team/app:nope`,
      '--insecure-registry',
      registry.host,
    );
    expect(missing.code).not.toBe(0);
  });
});

/**
 * A proxy in front of the real registry that cuts the first blob download after `keep` bytes (headers sent,
 * then the connection closed), and passes everything else through; it records what each blob GET asked for.
 */
async function cuttingProxy(
  target: string,
  keep: number,
): Promise<{ host: string; blobGets: Array<{ range?: string; status: number }>; close(): Promise<void> }> {
  const blobGets: Array<{ range?: string; status: number }> = [];
  let cut = false;
  const server: Server = createServer((req, res) => {
    const up = httpRequest(
      {
        host: '127.0.0.1',
        port: Number(target.split(':')[1]),
        method: req.method,
        path: req.url,
        headers: req.headers,
      },
      (answer) => {
        const isBlob = req.method === 'GET' && /\/blobs\/sha256:/.test(req.url ?? '');
        if (isBlob)
          blobGets.push({
            ...(req.headers.range ? { range: req.headers.range } : {}),
            status: answer.statusCode ?? 0,
          });
        res.writeHead(answer.statusCode ?? 502, answer.headers as IncomingHttpHeaders);
        if (isBlob && !cut && answer.statusCode === 200) {
          cut = true;
          answer.once('data', (chunk: Buffer) => {
            res.write(chunk.subarray(0, keep));
            setTimeout(() => res.socket?.destroy(), 50);
            answer.destroy();
          });
          return;
        }
        answer.pipe(res);
      },
    );
    up.on('error', () => res.destroy());
    req.pipe(up);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return {
    host: `127.0.0.1:${(server.address() as AddressInfo).port}`,
    blobGets,
    close: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}

describe('a blob download that breaks off', () => {
  it('is resumed with a Range request to the real registry and the copy is complete and verified', async () => {
    const ref = `${registry.host}/resume/app:v1`;
    expect((await runCli('image', 'copy', `oci:${srcDir}:amd64`, ref)).code).toBe(0);
    const proxy = await cuttingProxy(registry.host, 20);
    try {
      const out = join(tmp, 'resumed');
      const r = await runCli('image', 'copy', `${proxy.host}/resume/app:v1`, `oci:${out}:v1`, '--json');
      expect(r.err).toBe('');
      expect(r.code).toBe(0);
      // The first blob GET was cut after 20 bytes; the next asked for the rest and got 206 from distribution.
      expect(proxy.blobGets.filter((g) => g.range)).toEqual([{ range: 'bytes=20-', status: 206 }]);
      const layout = await openLayoutStore(out);
      expect((await layout.getManifest('v1')).bytes.equals(amd.bytes)).toBe(true);
      for (const l of amd.layers) {
        const got = Buffer.concat(await (await layout.getBlob(l.digest)).toArray());
        expect(sha256Digest(got)).toBe(l.digest);
      }
      await skopeo('inspect', '--raw', `oci:${out}:v1`);
    } finally {
      await proxy.close();
    }
  });
});
