import type { LookupFunction } from 'node:net';
import { createHash, randomBytes } from 'node:crypto';
import { rm } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { buffer } from 'node:stream/consumers';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createRegistryStore } from '../../src/image/registry-store.js';
import type { ImageStore } from '../../src/image/store.js';
import { type Digest, sha256Digest } from '../../src/oci/digest.js';
import { MediaType } from '../../src/oci/media-types.js';
import { getBlob, putBlob } from '../../src/registry/blobs.js';
import { RegistryClient } from '../../src/registry/client.js';
import { insecureRegistriesFromEnv } from '../../src/registry/insecure.js';
import { defaultRegistryClientPool } from '../../src/registry/pool.js';
import { listTags } from '../../src/registry/tags.js';
import { type TestRegistry, startRegistry, writeDockerConfig } from '../helpers/registry.js';

const clients: RegistryClient[] = [];

/** A fresh client (own token cache) so counts in one test are not affected by another. */
function freshClient(reg: TestRegistry, opts: Partial<ConstructorParameters<typeof RegistryClient>[0]> = {}) {
  const c = new RegistryClient({
    registry: reg.host,
    insecureRegistries: [reg.host],
    credentials: async () => undefined,
    ...opts,
  });
  clients.push(c);
  return c;
}

function storeFor(reg: TestRegistry, repository: string, client: RegistryClient): ImageStore {
  return createRegistryStore({ registry: reg.host, repository }, { client });
}

const bytesOf = (s: string) => Buffer.from(s);
const from = (b: Buffer) => () => Readable.from([b]);

interface PushedImage {
  manifest: Buffer;
  digest: Digest;
  config: Buffer;
  layer: Buffer;
}

/** A small OCI image: a config, one layer of random bytes, a manifest. Pushed blobs first, then the manifest. */
async function pushImage(
  store: ImageStore,
  opts: { tag?: string; arch?: string; mediaType?: string } = {},
): Promise<PushedImage> {
  const layer = randomBytes(2048);
  const config = Buffer.from(
    JSON.stringify({
      architecture: opts.arch ?? 'amd64',
      os: 'linux',
      rootfs: { type: 'layers', diff_ids: [sha256Digest(layer)] },
    }),
  );
  const docker = opts.mediaType === MediaType.dockerManifest;
  const manifestDoc = {
    schemaVersion: 2,
    mediaType: opts.mediaType ?? MediaType.ociManifest,
    config: {
      mediaType: docker ? MediaType.dockerConfig : MediaType.ociConfig,
      digest: sha256Digest(config),
      size: config.length,
    },
    layers: [
      {
        mediaType: docker ? MediaType.dockerLayerGzip : MediaType.ociLayerGzip,
        digest: sha256Digest(layer),
        size: layer.length,
      },
    ],
  };
  for (const b of [config, layer])
    await store.putBlob({ digest: sha256Digest(b), size: b.length, open: from(b) });
  // Deliberately not canonical JSON (spaces, key order): the registry must keep our exact bytes.
  const manifest = Buffer.from(JSON.stringify(manifestDoc, null, 3));
  const digest = await store.putManifest({
    bytes: manifest,
    mediaType: manifestDoc.mediaType,
    ...(opts.tag ? { tag: opts.tag } : {}),
  });
  return { manifest, digest, config, layer };
}

/**
 * Pseudo-random chunks, produced only when pulled (so buffering can be observed). Each chunk is a random base
 * block stamped with its index, so no two chunks are equal; the same `seed` gives the same bytes.
 */
function generated(
  total: number,
  chunk: number,
  opts: { seed?: Buffer; onProduce?: (producedSoFar: number) => void } = {},
): { stream: Readable; digest: () => Digest; seed: Buffer } {
  const seed = opts.seed ?? randomBytes(chunk);
  const hash = createHash('sha256');
  let produced = 0;
  let index = 0;
  const stream = new Readable({
    read() {
      if (produced >= total) {
        this.push(null);
        return;
      }
      const n = Math.min(chunk, total - produced);
      const buf = Buffer.from(seed.subarray(0, n));
      buf.writeUInt32BE(index++, 0);
      hash.update(buf);
      produced += n;
      opts.onProduce?.(produced);
      this.push(buf);
    },
  });
  return { stream, seed, digest: () => `sha256:${hash.copy().digest('hex')}` as Digest };
}

afterAll(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await defaultRegistryClientPool().close();
});

describe('registry without auth', () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry();
  });
  afterAll(async () => {
    await reg?.stop();
  });

  it('pings: HTTPS refused by a plain-HTTP registry, plain HTTP used because it is listed insecure', async () => {
    const ping = await freshClient(reg).ping();
    expect(ping).toMatchObject({ origin: `http://${reg.host}`, auth: 'none', apiVersion: 'registry/2.0' });
  });

  it('pushes blobs and a manifest and pulls them back byte for byte, digests verified', async () => {
    const store = storeFor(reg, 'roundtrip/app', freshClient(reg));
    const img = await pushImage(store, { tag: 'v1' });
    expect(img.digest).toBe(sha256Digest(img.manifest));

    const got = await store.getManifest('v1');
    expect(got.bytes.equals(img.manifest)).toBe(true);
    expect(got.digest).toBe(img.digest);
    expect(got.mediaType).toBe(MediaType.ociManifest);

    const byDigest = await store.getManifest(img.digest);
    expect(byDigest.bytes.equals(img.manifest)).toBe(true);
    expect(await store.resolve('v1')).toEqual({
      digest: img.digest,
      mediaType: MediaType.ociManifest,
      size: img.manifest.length,
    });

    expect((await buffer(await store.getBlob(sha256Digest(img.layer)))).equals(img.layer)).toBe(true);
    expect((await buffer(await store.getBlob(sha256Digest(img.config)))).equals(img.config)).toBe(true);
    expect(await store.hasBlob(sha256Digest(img.layer))).toBe(true);
    expect(await store.hasBlob(sha256Digest('absent'))).toBe(false);
  });

  it('keeps Docker v2 manifests as Docker (Content-Type and bytes)', async () => {
    const store = storeFor(reg, 'roundtrip/docker', freshClient(reg));
    const img = await pushImage(store, { tag: 'd1', mediaType: MediaType.dockerManifest });
    const got = await store.getManifest('d1');
    expect(got.mediaType).toBe(MediaType.dockerManifest);
    expect(got.bytes.equals(img.manifest)).toBe(true);
  });

  it('reports an absent manifest as MANIFEST_UNKNOWN and resolve() as undefined', async () => {
    const store = storeFor(reg, 'roundtrip/app', freshClient(reg));
    await expect(store.getManifest('nope')).rejects.toMatchObject({
      code: 'MANIFEST_UNKNOWN',
      message: expect.stringContaining(`/v2/roundtrip/app/manifests/nope failed: HTTP 404`),
    });
    expect(await store.resolve('nope')).toBeUndefined();
    expect(await store.resolve(sha256Digest('nope'))).toBeUndefined();
  });

  it('skips an existing blob after one HEAD: no upload, the source never opened', async () => {
    const store = storeFor(reg, 'skip/app', freshClient(reg));
    const data = randomBytes(4096);
    const digest = sha256Digest(data);
    expect((await store.putBlob({ digest, size: data.length, open: from(data) })).outcome).toBe('uploaded');
    reg.resetCounters();
    let opened = 0;
    const again = await store.putBlob({
      digest,
      size: data.length,
      open: () => {
        opened++;
        return Readable.from([data]);
      },
    });
    expect(again).toEqual({ digest, size: data.length, outcome: 'exists' });
    expect(opened).toBe(0);
    const c = reg.counters();
    expect(c.blobHeads).toBe(1);
    expect(c.byKind.upload).toBe(0);
    expect(c.bytesUploaded).toBe(0);
  });

  it('mounts a blob from another repository without sending its bytes', async () => {
    const client = freshClient(reg);
    const src = storeFor(reg, 'mount/source', client);
    const dst = storeFor(reg, 'mount/target', client);
    const data = randomBytes(8192);
    const digest = sha256Digest(data);
    await src.putBlob({ digest, size: data.length, open: from(data) });
    reg.resetCounters();
    let opened = 0;
    const r = await dst.putBlob({
      digest,
      size: data.length,
      open: () => {
        opened++;
        return Readable.from([data]);
      },
      mountFrom: { registry: reg.host, repository: 'mount/source' },
    });
    expect(r).toEqual({ digest, size: data.length, outcome: 'mounted' });
    expect(opened).toBe(0);
    expect(reg.counters()).toMatchObject({ mounts: 1, blobUploads: 0, bytesUploaded: 0 });
    expect((await buffer(await dst.getBlob(digest))).equals(data)).toBe(true);
  });

  it('uploads normally when the mount source does not hold the blob (202 → upload session)', async () => {
    const store = storeFor(reg, 'mount/target2', freshClient(reg));
    const data = randomBytes(1000);
    const r = await store.putBlob({
      digest: sha256Digest(data),
      size: data.length,
      open: from(data),
      mountFrom: { registry: reg.host, repository: 'mount/empty-source' },
    });
    expect(r.outcome).toBe('uploaded');
    expect(await store.hasBlob(sha256Digest(data))).toBe(true);
  });

  it('streams a large blob of unknown size in one PATCH without buffering it whole', async () => {
    const client = freshClient(reg);
    const total = 48 * 1024 * 1024;
    reg.resetCounters();
    const before = reg.proxy!.bytesReceived();
    // How far the producer ran ahead of what reached the registry side, at its worst.
    let maxAhead = 0;
    const gen = generated(total, 256 * 1024, {
      onProduce: (produced) => {
        maxAhead = Math.max(maxAhead, produced - (reg.proxy!.bytesReceived() - before));
      },
    });
    const r = await putBlob(client, 'large/app', { open: () => gen.stream });
    expect(r).toEqual({ digest: gen.digest(), size: total, outcome: 'uploaded' });
    expect(reg.proxy!.bytesReceived() - before).toBe(total);
    // A whole-buffering client would be ~48 MiB ahead; streaming stays within socket and stream buffers.
    expect(maxAhead).toBeGreaterThan(0);
    expect(maxAhead).toBeLessThan(16 * 1024 * 1024);
    const patches = reg.requests.filter((q) => q.method === 'PATCH');
    expect(patches).toHaveLength(1);
    expect(patches[0]!.requestBytes).toBe(total);
    expect(reg.counters().blobUploads).toBe(1);

    // Pull it back through the verifying stream.
    const hash = createHash('sha256');
    let n = 0;
    for await (const chunk of await getBlob(client, 'large/app', r.digest)) {
      hash.update(chunk as Buffer);
      n += (chunk as Buffer).length;
    }
    expect(n).toBe(total);
    expect(`sha256:${hash.digest('hex')}`).toBe(r.digest);
  });

  it('streams a large blob of known digest and size (above the single-PUT limit)', async () => {
    const client = freshClient(reg, { monolithicUploadMaxBytes: 1024 * 1024 });
    const total = 12 * 1024 * 1024;
    const first = generated(total, 128 * 1024);
    for await (const _ of first.stream) {
      // drain: computes the digest
    }
    const digest = first.digest();
    reg.resetCounters();
    const r = await putBlob(client, 'large/known', {
      digest,
      size: total,
      open: () => generated(total, 128 * 1024, { seed: first.seed }).stream,
    });
    expect(r).toEqual({ digest, size: total, outcome: 'uploaded' });
    expect(reg.requests.filter((q) => q.method === 'PATCH').map((q) => q.requestBytes)).toEqual([total]);
  });

  it('refuses an upload whose bytes do not match the digest (registry DIGEST_INVALID); nothing is stored', async () => {
    const store = storeFor(reg, 'bad/digest', freshClient(reg));
    const data = bytesOf('the real content');
    const claimed = sha256Digest('something else entirely');
    const err = await store.putBlob({ digest: claimed, size: data.length, open: from(data) }).catch((e) => e);
    expect(err).toMatchObject({ code: 'DIGEST_INVALID' });
    expect(err.message).toMatch(
      /PUT http:\/\/127\.0\.0\.1:\d+\/v2\/bad\/digest\/blobs\/uploads\/\S+ failed: HTTP 400/,
    );
    expect(err.hint).toMatch(/do not hash to the digest/);
    expect(await store.hasBlob(claimed)).toBe(false);
    expect(await store.hasBlob(sha256Digest(data))).toBe(false);
  });

  it('refuses a streamed upload whose bytes do not match the digest; nothing is stored', async () => {
    const client = freshClient(reg, { monolithicUploadMaxBytes: 0 });
    const store = storeFor(reg, 'bad/stream', client);
    const data = randomBytes(100_000);
    const claimed = sha256Digest('not these bytes');
    await expect(
      store.putBlob({ digest: claimed, size: data.length, open: from(data) }),
    ).rejects.toMatchObject({
      code: 'DIGEST_INVALID',
    });
    expect(await store.hasBlob(claimed)).toBe(false);
    expect(await store.hasBlob(sha256Digest(data))).toBe(false);
  });

  it('pushes an OCI index over two manifests and pulls it back', async () => {
    const store = storeFor(reg, 'multi/app', freshClient(reg));
    const amd = await pushImage(store, { arch: 'amd64' });
    const arm = await pushImage(store, { arch: 'arm64' });
    const index = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: MediaType.ociIndex,
        manifests: [
          {
            mediaType: MediaType.ociManifest,
            digest: amd.digest,
            size: amd.manifest.length,
            platform: { architecture: 'amd64', os: 'linux' },
          },
          {
            mediaType: MediaType.ociManifest,
            digest: arm.digest,
            size: arm.manifest.length,
            platform: { architecture: 'arm64', os: 'linux' },
          },
        ],
      }),
    );
    const digest = await store.putManifest({ bytes: index, mediaType: MediaType.ociIndex, tag: '1.0' });
    expect(digest).toBe(sha256Digest(index));
    const got = await store.getManifest('1.0');
    expect(got).toEqual({ bytes: index, digest, mediaType: MediaType.ociIndex });
    for (const child of [amd, arm]) {
      expect((await store.getManifest(child.digest)).bytes.equals(child.manifest)).toBe(true);
    }

    // An independent reader sees exactly our bytes.
    const raw = await execa(
      'skopeo',
      ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/multi/app:1.0`],
      {
        encoding: 'buffer',
      },
    );
    expect(Buffer.from(raw.stdout).equals(index)).toBe(true);
    const child = await execa(
      'skopeo',
      ['inspect', '--raw', '--tls-verify=false', `docker://${reg.host}/multi/app@${arm.digest}`],
      { encoding: 'buffer' },
    );
    expect(Buffer.from(child.stdout).equals(arm.manifest)).toBe(true);
  });

  it('lists tags (distribution 2.8 ignores n/last; Link pagination is covered by the unit tests)', async () => {
    const client = freshClient(reg);
    const store = storeFor(reg, 'tags/app', client);
    const img = await pushImage(store, { tag: 'a' });
    for (const t of ['e', 'c', 'b', 'd']) {
      await store.putManifest({ bytes: img.manifest, mediaType: MediaType.ociManifest, tag: t });
    }
    reg.resetCounters();
    expect((await listTags(client, 'tags/app', { pageSize: 2 })).sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(reg.requests.map((q) => `${q.path}?${q.query}`)).toEqual(['/v2/tags/app/tags/list?n=2']);
    expect((await store.listTags()).sort()).toEqual(['a', 'b', 'c', 'd', 'e']);
    expect(await storeFor(reg, 'tags/never-pushed', client).listTags()).toEqual([]);
  });

  it('refuses plain HTTP unless the registry is loopback or listed insecure (flag or CNB_INSECURE_REGISTRIES)', async () => {
    // The registry under a name that is not loopback (resolved to 127.0.0.1 by the test).
    const name = `registry.example:${reg.directHost.split(':')[1]}`;
    const lookup: LookupFunction = (_host, opts, cb) =>
      opts.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4);
    const named = (insecureRegistries: string[]) =>
      createRegistryStore(
        { registry: name, repository: 'roundtrip/app' },
        {
          client: freshClient(reg, {
            registry: name,
            insecureRegistries,
            lookup,
          }),
        },
      );
    const err = await named([])
      .getManifest('v1')
      .catch((e) => e);
    expect(err.code).toBe('REGISTRY_TLS');
    expect(err.message).toContain(`GET https://${name}/v2/ failed`);
    expect(err.hint).toContain(`--insecure-registry ${name}`);
    expect(err.hint).toContain('CNB_INSECURE_REGISTRIES');

    const viaEnv = named(insecureRegistriesFromEnv({ CNB_INSECURE_REGISTRIES: `other:1,${name}` }));
    expect((await viaEnv.getManifest('v1')).mediaType).toBe(MediaType.ociManifest);
    // A bare host listed matches any port.
    expect((await named(['registry.example']).resolve('v1'))?.mediaType).toBe(MediaType.ociManifest);
    // Loopback needs no listing, as with docker and pack.
    const loopback = createRegistryStore(
      { registry: reg.directHost, repository: 'roundtrip/app' },
      { credentials: async () => undefined },
    );
    expect((await loopback.getManifest('v1')).mediaType).toBe(MediaType.ociManifest);
  });
});

describe('registry with htpasswd (Basic) auth', () => {
  let reg: TestRegistry;
  const tempDirs: string[] = [];
  beforeAll(async () => {
    reg = await startRegistry({ auth: 'htpasswd', users: [{ name: 'alice', password: 'wonder-land' }] });
  });
  afterAll(async () => {
    await reg?.stop();
    for (const d of tempDirs) await rm(d, { recursive: true, force: true });
  });

  it('fails without credentials with a clear message and a login hint', async () => {
    const client = freshClient(reg);
    expect((await client.ping()).auth).toBe('basic');
    const err = await storeFor(reg, 'private/app', client)
      .putBlob({ digest: sha256Digest('x'), size: 1, open: from(bytesOf('x')) })
      .catch((e) => e);
    expect(err.code).toBe('REGISTRY_UNAUTHORIZED');
    expect(err.message).toMatch(
      new RegExp(
        `HEAD http://${reg.host.replace(/\./g, '\\.')}/v2/private/app/blobs/sha256:[0-9a-f]{64} failed: HTTP 401`,
      ),
    );
    expect(err.hint).toContain(`packfarm login ${reg.host}`);
    expect(err.hint).toContain('CNB_REGISTRY_AUTH');
  });

  it('rejects a wrong password, saying the credentials were refused and where they came from', async () => {
    const client = freshClient(reg, {
      credentials: { username: 'alice', password: 'nope', source: 'the test' },
    });
    await expect(storeFor(reg, 'private/app', client).listTags()).rejects.toMatchObject({
      code: 'REGISTRY_UNAUTHORIZED',
      message: expect.stringContaining(`${reg.host} refused the credentials from the test`),
      hint: expect.stringContaining('log in again'),
    });
  });

  it('pushes and pulls with credentials from a DOCKER_CONFIG config.json', async () => {
    const dir = await writeDockerConfig(`http://${reg.host}/`, { name: 'alice', password: 'wonder-land' });
    tempDirs.push(dir);
    const store = createRegistryStore(
      { registry: reg.host, repository: 'private/app' },
      { insecureRegistries: [reg.host], env: { DOCKER_CONFIG: dir } },
    );
    const img = await pushImage(store, { tag: 'v1' });
    expect((await store.getManifest('v1')).digest).toBe(img.digest);
  });

  it('pushes and pulls with credentials from CNB_REGISTRY_AUTH', async () => {
    const env = {
      CNB_REGISTRY_AUTH: JSON.stringify({
        [reg.host]: `Basic ${Buffer.from('alice:wonder-land').toString('base64')}`,
      }),
      DOCKER_CONFIG: '/nonexistent-packfarm-docker-config',
    };
    const store = createRegistryStore(
      { registry: reg.host, repository: 'private/env' },
      { insecureRegistries: [reg.host], env },
    );
    const img = await pushImage(store, { tag: 'v2' });
    expect((await store.resolve('v2'))?.digest).toBe(img.digest);
    reg.resetCounters();
    // Basic needs no token round trips: one request per operation.
    await store.getManifest('v2');
    expect(reg.counters().requests).toBe(1);
  });
});

describe('registry with token (Bearer) auth', () => {
  let reg: TestRegistry;
  beforeAll(async () => {
    reg = await startRegistry({
      auth: 'token',
      users: [
        { name: 'bob', password: 'builder' },
        { name: 'reader', password: 'only-pull' },
      ],
      token: {
        grant: (user, _type, _name, asked) => (user === 'reader' ? asked.filter((a) => a === 'pull') : asked),
      },
    });
  });
  afterAll(async () => {
    await reg?.stop();
  });

  const bob = { username: 'bob', password: 'builder' };

  it('announces the realm on ping', async () => {
    const ping = await freshClient(reg, { credentials: bob }).ping();
    expect(ping).toMatchObject({
      auth: 'bearer',
      realm: reg.tokenIssuer!.realm,
      service: reg.tokenIssuer!.service,
    });
  });

  it('fetches one token and reuses it for every request of a push and pull', async () => {
    const issued = reg.tokenIssuer!.requests;
    const start = issued.length;
    const client = freshClient(reg, { credentials: bob });
    const store = storeFor(reg, 'team/app', client);
    const img = await pushImage(store, { tag: 'v1' });
    await store.getManifest('v1');
    await store.resolve(img.digest);
    await buffer(await store.getBlob(sha256Digest(img.layer)));
    await store.listTags();
    const mine = issued.slice(start);
    expect(mine).toHaveLength(1);
    expect(mine[0]).toMatchObject({ user: 'bob', status: 200, scopes: ['repository:team/app:pull,push'] });
    // Several requests went to the registry with that one token.
    expect(reg.requests.filter((q) => q.repository === 'team/app').length).toBeGreaterThan(5);
  });

  it('asks for the union of scopes for a cross-repository mount', async () => {
    const client = freshClient(reg, { credentials: bob });
    const src = storeFor(reg, 'team/base', client);
    const data = randomBytes(3000);
    const digest = sha256Digest(data);
    await src.putBlob({ digest, size: data.length, open: from(data) });
    const start = reg.tokenIssuer!.requests.length;
    reg.resetCounters();
    const r = await storeFor(reg, 'team/derived', client).putBlob({
      digest,
      size: data.length,
      open: from(data),
      mountFrom: { registry: reg.host, repository: 'team/base' },
    });
    expect(r.outcome).toBe('mounted');
    expect(reg.counters()).toMatchObject({ mounts: 1, bytesUploaded: 0 });
    const asked = reg.tokenIssuer!.requests.slice(start);
    expect(asked).toHaveLength(1);
    expect(asked[0]!.scopes).toContain('repository:team/derived:pull,push');
    expect(asked[0]!.scopes.some((s) => /^repository:team\/base:.*pull/.test(s))).toBe(true);
  });

  it('is refused anonymously, with a login hint', async () => {
    const store = storeFor(reg, 'team/app', freshClient(reg));
    await expect(store.getManifest('v1')).rejects.toMatchObject({
      code: 'REGISTRY_UNAUTHORIZED',
      hint: expect.stringContaining('log in'),
    });
  });

  it('refuses a push when the token service granted only pull', async () => {
    const store = storeFor(
      reg,
      'team/app',
      freshClient(reg, { credentials: { username: 'reader', password: 'only-pull' } }),
    );
    expect((await store.getManifest('v1')).mediaType).toBe(MediaType.ociManifest);
    const data = randomBytes(10);
    const err = await store
      .putBlob({ digest: sha256Digest(data), size: data.length, open: from(data) })
      .catch((e) => e);
    expect(err).toMatchObject({ code: 'REGISTRY_DENIED', hint: expect.stringContaining('permissions') });
    expect(err.message).toContain('repository:team/app:pull,push');
  });

  it('rejects wrong credentials at the token service', async () => {
    const store = storeFor(
      reg,
      'team/app',
      freshClient(reg, { credentials: { username: 'bob', password: 'x' } }),
    );
    const err = await store.getManifest('v1').catch((e) => e);
    expect(err.code).toBe('REGISTRY_UNAUTHORIZED');
    expect(err.message).toContain(`token service ${reg.tokenIssuer!.realm}`);
    expect(err.message).toContain(`${reg.host} refused the credentials given`);
    expect(err.hint).toContain('log in again');
  });
});
