import type { LookupFunction } from 'node:net';
import { createHash } from 'node:crypto';
import { type IncomingMessage, type Server, type ServerResponse, createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { Readable } from 'node:stream';
import { text } from 'node:stream/consumers';
import { afterEach, describe, expect, it } from 'vitest';
import { type Digest, sha256Digest } from '../oci/digest.js';
import { MediaType } from '../oci/media-types.js';
import { getBlob, putBlob } from './blobs.js';
import { RegistryClient, type RegistryClientOptions } from './client.js';
import { getManifest, headManifest, putManifest } from './manifests.js';
import { listTags } from './tags.js';

interface Seen {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  body: Buffer;
}

interface Fake {
  host: string;
  seen: Seen[];
  close(): Promise<void>;
}

const servers: Server[] = [];
const clients: RegistryClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  await Promise.all(
    servers.splice(0).map(
      (s) =>
        new Promise<void>((r) => {
          s.closeAllConnections();
          s.close(() => r());
        }),
    ),
  );
});

/** A local HTTP server; the handler sees the whole request body. */
async function fake(
  handler: (req: Seen, res: ServerResponse, raw: IncomingMessage) => unknown,
): Promise<Fake> {
  const seen: Seen[] = [];
  const server = createServer(async (req, res) => {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const s: Seen = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      body: Buffer.concat(chunks),
    };
    seen.push(s);
    await handler(s, res, req);
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  const host = `127.0.0.1:${(server.address() as AddressInfo).port}`;
  return { host, seen, close: async () => {} };
}

function json(res: ServerResponse, status: number, body: unknown, headers: Record<string, string> = {}) {
  res.writeHead(status, { 'content-type': 'application/json', ...headers });
  res.end(JSON.stringify(body));
}

function client(host: string, opts: Partial<RegistryClientOptions> = {}): RegistryClient {
  const c = new RegistryClient({
    registry: host,
    insecureRegistries: [host],
    credentials: async () => undefined,
    ...opts,
  });
  clients.push(c);
  return c;
}

const sleeps = () => {
  const delays: number[] = [];
  return { delays, sleep: async (ms: number) => void delays.push(ms) };
};

const MANIFEST = Buffer.from(
  JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaType.ociManifest,
    config: { mediaType: MediaType.ociConfig, digest: sha256Digest('{}'), size: 2 },
    layers: [],
  }),
);
const MANIFEST_DIGEST = sha256Digest(MANIFEST);

function serveManifest(res: ServerResponse, headers: Record<string, string> = {}) {
  res.writeHead(200, {
    'content-type': MediaType.ociManifest,
    'docker-content-digest': MANIFEST_DIGEST,
    'content-length': String(MANIFEST.length),
    ...headers,
  });
  res.end(MANIFEST);
}

describe('retries', () => {
  it('honours Retry-After on 429, then succeeds', async () => {
    let n = 0;
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      if (n++ === 0)
        return json(
          res,
          429,
          { errors: [{ code: 'TOOMANYREQUESTS', message: 'slow down' }] },
          { 'retry-after': '2' },
        );
      serveManifest(res);
    });
    const { delays, sleep } = sleeps();
    const m = await getManifest(client(reg.host, { retry: { sleep } }), 'app', 'v1');
    expect(m.digest).toBe(MANIFEST_DIGEST);
    expect(delays).toEqual([2000]);
    expect(reg.seen.filter((s) => s.url.includes('manifests'))).toHaveLength(2);
  });

  it('backs off with jitter on 503, then succeeds', async () => {
    let n = 0;
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      if (n++ < 2) return json(res, 503, {});
      serveManifest(res);
    });
    const { delays, sleep } = sleeps();
    await getManifest(client(reg.host, { retry: { sleep, baseDelayMs: 100 } }), 'app', 'v1');
    expect(delays).toHaveLength(2);
    expect(delays[0]).toBeGreaterThanOrEqual(50);
    expect(delays[0]).toBeLessThanOrEqual(100);
    expect(delays[1]).toBeGreaterThanOrEqual(100);
    expect(delays[1]).toBeLessThanOrEqual(200);
  });

  it('gives up after the bounded attempts with the registry message, URL and status', async () => {
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      json(res, 503, { errors: [{ code: 'UNAVAILABLE', message: 'backend down' }] });
    });
    const { delays, sleep } = sleeps();
    const err = await getManifest(client(reg.host, { retry: { sleep, attempts: 3 } }), 'app', 'v1').catch(
      (e) => e,
    );
    expect(err).toMatchObject({ code: 'REGISTRY_ERROR' });
    expect(err.message).toContain(`GET http://${reg.host}/v2/app/manifests/v1 failed: HTTP 503`);
    expect(err.message).toContain('backend down');
    expect(delays).toHaveLength(2);
    expect(reg.seen.filter((s) => s.url.includes('manifests'))).toHaveLength(3);
  });

  it('does not wait for a Retry-After longer than allowed', async () => {
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      json(res, 429, {}, { 'retry-after': '3600' });
    });
    const { delays, sleep } = sleeps();
    const err = await getManifest(client(reg.host, { retry: { sleep } }), 'app', 'v1').catch((e) => e);
    expect(err).toMatchObject({
      code: 'REGISTRY_TOO_MANY_REQUESTS',
      hint: expect.stringContaining('Retry-After: 3600'),
    });
    expect(delays).toEqual([]);
  });

  it('retries a reset connection', async () => {
    let n = 0;
    const reg = await fake((req, res, raw) => {
      if (req.url === '/v2/') return json(res, 200, {});
      if (n++ === 0) {
        raw.socket.destroy();
        return;
      }
      serveManifest(res);
    });
    const { delays, sleep } = sleeps();
    expect((await getManifest(client(reg.host, { retry: { sleep } }), 'app', 'v1')).digest).toBe(
      MANIFEST_DIGEST,
    );
    expect(delays).toHaveLength(1);
  });
});

describe('redirects', () => {
  const blob = Buffer.from('layer bytes served by storage');
  const digest = sha256Digest(blob);

  async function setup(storageBody: Buffer) {
    const storage = await fake((_req, res) => {
      res.writeHead(200, { 'content-length': String(storageBody.length) });
      res.end(storageBody);
    });
    const reg = await fake((req, res) => {
      if (!req.headers.authorization) {
        res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' });
        return res.end();
      }
      if (req.url === '/v2/') return json(res, 200, {});
      // Same host name, other port: another origin.
      res.writeHead(307, { location: `http://${storage.host}/bucket/${digest}?sig=secret` });
      res.end();
    });
    return { storage, reg };
  }

  it('follows a blob redirect to storage without forwarding Authorization', async () => {
    const { storage, reg } = await setup(blob);
    const c = client(reg.host, {
      credentials: { username: 'u', password: 'p' },
      insecureRegistries: [reg.host],
    });
    const out = await text(await getBlob(c, 'app', digest));
    expect(out).toBe(blob.toString());
    const toRegistry = reg.seen.find((s) => s.url.includes('/blobs/'));
    expect(toRegistry?.headers.authorization).toBe(`Basic ${Buffer.from('u:p').toString('base64')}`);
    expect(storage.seen).toHaveLength(1);
    expect(storage.seen[0]!.url).toBe(`/bucket/${digest}?sig=secret`);
    expect(storage.seen[0]!.headers.authorization).toBeUndefined();
  });

  it('errors the stream when the bytes do not match the digest', async () => {
    const { reg } = await setup(Buffer.from('tampered!'));
    const c = client(reg.host, { credentials: { username: 'u', password: 'p' } });
    await expect(text(await getBlob(c, 'app', digest))).rejects.toMatchObject({ code: 'DIGEST_MISMATCH' });
  });

  it('stops after the redirect limit', async () => {
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      res.writeHead(302, { location: `/v2/app/blobs/${digest}?again=${Math.random()}` });
      res.end();
    });
    await expect(getBlob(client(reg.host, { maxRedirects: 3 }), 'app', digest)).rejects.toThrow(
      /more than 3 redirects/,
    );
  });
});

describe('bearer tokens', () => {
  async function tokenRegistry(opts: { expiresIn?: number; oauth?: 'ok' | '404' } = {}) {
    const tokens: Seen[] = [];
    let issued = 0;
    const reg = await fake((req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/token') {
        tokens.push(req);
        if (req.method === 'POST' && opts.oauth !== 'ok') return json(res, 404, {});
        issued++;
        const body: Record<string, unknown> = { expires_in: opts.expiresIn ?? 300 };
        body[req.method === 'POST' ? 'access_token' : 'token'] = `tok-${issued}`;
        return json(res, 200, body);
      }
      if (!req.headers.authorization?.startsWith('Bearer tok-')) {
        res.writeHead(401, {
          'www-authenticate': `Bearer realm="http://${req.headers.host}/token",service="fake"`,
        });
        return res.end();
      }
      if (url.pathname === '/v2/') return json(res, 200, {});
      serveManifest(res);
    });
    return { reg, tokens };
  }

  it('fetches one token for parallel requests and reuses it until just before expiry', async () => {
    const { reg, tokens } = await tokenRegistry({ expiresIn: 60 });
    let now = 1_000_000;
    const c = client(reg.host, { credentials: { username: 'u', password: 'p' }, now: () => now });
    await Promise.all([1, 2, 3, 4, 5].map(() => getManifest(c, 'app', 'v1')));
    await getManifest(c, 'app', 'v1');
    expect(tokens).toHaveLength(1);
    const url = new URL(tokens[0]!.url, 'http://x');
    expect(url.searchParams.get('service')).toBe('fake');
    expect(url.searchParams.getAll('scope')).toEqual(['repository:app:pull']);
    expect(url.searchParams.get('account')).toBe('u');
    expect(tokens[0]!.headers.authorization).toBe(`Basic ${Buffer.from('u:p').toString('base64')}`);
    now += 50_000; // still before 60 s minus the margin
    await getManifest(c, 'app', 'v1');
    expect(tokens).toHaveLength(1);
    now += 5_000; // within the renewal margin
    await getManifest(c, 'app', 'v1');
    expect(tokens).toHaveLength(2);
  });

  it('asks for the union of scopes and reuses a wider token for narrower requests', async () => {
    const { reg, tokens } = await tokenRegistry();
    const c = client(reg.host);
    await headManifest(c, 'a', 'v1');
    await putManifest(c, 'b', { bytes: MANIFEST, mediaType: MediaType.ociManifest, tag: 'v1' }).catch(
      () => {},
    );
    await getManifest(c, 'a', 'v1');
    await getManifest(c, 'b', 'v1');
    const scopes = tokens.map((t) => new URL(t.url, 'http://x').searchParams.getAll('scope'));
    expect(scopes).toEqual([['repository:a:pull'], ['repository:a:pull', 'repository:b:pull,push']]);
  });

  it('exchanges an identity token by OAuth2 POST, falling back to GET on 404', async () => {
    const ok = await tokenRegistry({ oauth: 'ok' });
    await getManifest(client(ok.reg.host, { credentials: { identityToken: 'refresh-1' } }), 'app', 'v1');
    expect(ok.tokens.map((t) => t.method)).toEqual(['POST']);
    const form = new URLSearchParams(ok.tokens[0]!.body.toString());
    expect(Object.fromEntries(form)).toMatchObject({
      grant_type: 'refresh_token',
      refresh_token: 'refresh-1',
      service: 'fake',
      scope: 'repository:app:pull',
    });

    const legacy = await tokenRegistry({ oauth: '404' });
    await getManifest(client(legacy.reg.host, { credentials: { identityToken: 'refresh-2' } }), 'app', 'v1');
    expect(legacy.tokens.map((t) => t.method)).toEqual(['POST', 'GET']);
    expect(legacy.tokens[1]!.headers.authorization).toBe(
      `Basic ${Buffer.from('<token>:refresh-2').toString('base64')}`,
    );
  });

  it('sends a registry token as is, without any token exchange', async () => {
    const { reg, tokens } = await tokenRegistry();
    const c = client(reg.host, { credentials: { registryToken: 'tok-preissued' } });
    await getManifest(c, 'app', 'v1');
    expect(tokens).toHaveLength(0);
    expect(reg.seen.at(-1)!.headers.authorization).toBe('Bearer tok-preissued');
  });
});

describe('a renewable registry token (a farm job’s)', () => {
  it('on a 401 it is renewed once and the request sent again with the new token', async () => {
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      if (req.headers.authorization === 'Bearer fresh') return serveManifest(res);
      json(
        res,
        401,
        { errors: [{ code: 'UNAUTHORIZED', message: 'expired' }] },
        {
          'www-authenticate': 'Bearer realm="http://127.0.0.1:1/token",service="s",error="invalid_token"',
        },
      );
    });
    let current = 'stale';
    let renewals = 0;
    const cred = {
      get registryToken() {
        return current;
      },
      renew: async () => {
        renewals++;
        current = 'fresh';
        return true;
      },
    };
    const c = client(reg.host, { credentials: async () => cred });
    await getManifest(c, 'app', 'v1');
    expect(renewals).toBe(1);
    expect(reg.seen.slice(-2).map((r) => r.headers.authorization)).toEqual(['Bearer stale', 'Bearer fresh']);
    // A token lacking a scope is not renewed (a new one would have the same scopes).
    current = 'other';
    const lacking = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      json(
        res,
        401,
        { errors: [{ code: 'UNAUTHORIZED', message: 'scope' }] },
        {
          'www-authenticate':
            'Bearer realm="http://127.0.0.1:1/token",service="s",error="insufficient_scope"',
        },
      );
    });
    const c2 = client(lacking.host, { credentials: async () => cred });
    expect((await getManifest(c2, 'app', 'v1').catch((e) => e)).code).toBe('REGISTRY_DENIED');
    expect(renewals).toBe(1);
    // A token that cannot be renewed fails at the first 401, as before.
    current = 'stale';
    const fixed = client(reg.host, { credentials: { registryToken: 'stale' } });
    expect((await getManifest(fixed, 'app', 'v1').catch((e) => e)).code).toBe('REGISTRY_UNAUTHORIZED');
  });
});

describe('errors and documents', () => {
  it('maps the registry error body to a code, naming URL, status and message', async () => {
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      json(res, 404, {
        errors: [{ code: 'MANIFEST_UNKNOWN', message: 'manifest unknown', detail: { Tag: 'v9' } }],
      });
    });
    const err = await getManifest(client(reg.host), 'app', 'v9').catch((e) => e);
    expect(err.code).toBe('MANIFEST_UNKNOWN');
    expect(err.message).toBe(
      `GET http://${reg.host}/v2/app/manifests/v9 failed: HTTP 404 — MANIFEST_UNKNOWN: manifest unknown ({"Tag":"v9"})`,
    );
  });

  it('refuses a manifest whose Content-Type disagrees with its mediaType', async () => {
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      serveManifest(res, { 'content-type': MediaType.dockerManifest });
    });
    await expect(getManifest(client(reg.host), 'app', 'v1')).rejects.toMatchObject({
      code: 'MANIFEST_INVALID',
    });
  });

  it('verifies a manifest fetched by digest', async () => {
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      serveManifest(res, { 'docker-content-digest': '' });
    });
    const other = sha256Digest('something else');
    await expect(getManifest(client(reg.host), 'app', other)).rejects.toMatchObject({
      code: 'DIGEST_MISMATCH',
    });
    expect((await getManifest(client(reg.host), 'app', MANIFEST_DIGEST)).bytes.equals(MANIFEST)).toBe(true);
  });

  it('follows tag list pagination', async () => {
    const reg = await fake((req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/v2/') return json(res, 200, {});
      const last = url.searchParams.get('last');
      if (!last)
        return json(
          res,
          200,
          { name: 'app', tags: ['a', 'b'] },
          { link: '</v2/app/tags/list?n=2&last=b>; rel="next"' },
        );
      if (last === 'b')
        return json(
          res,
          200,
          { name: 'app', tags: ['c', 'd'] },
          { link: `<http://${req.headers.host}/v2/app/tags/list?n=2&last=d>; rel=next` },
        );
      json(res, 200, { name: 'app', tags: ['e'] });
    });
    expect(await listTags(client(reg.host), 'app')).toEqual(['a', 'b', 'c', 'd', 'e']);
  });

  it('refuses plain HTTP to a registry not listed as insecure, with a hint', async () => {
    const reg = await fake((req, res) =>
      req.url === '/v2/' ? json(res, 200, {}) : json(res, 200, { name: 'app', tags: ['x'] }),
    );
    // A name that is not loopback, answered on 127.0.0.1.
    const host = `registry.example:${reg.host.split(':')[1]}`;
    const lookup: LookupFunction = (_name, opts, cb) =>
      opts.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4);
    const err = await getManifest(client(host, { insecureRegistries: [], lookup }), 'app', 'v1').catch(
      (e) => e,
    );
    expect(err.code).toBe('REGISTRY_TLS');
    expect(err.message).toContain(`https://${host}/v2/`);
    expect(err.hint).toContain(`--insecure-registry ${host}`);
    // Listed, the same registry answers over plain HTTP.
    expect(await listTags(client(host, { insecureRegistries: [host], lookup }), 'app')).toEqual(['x']);
  });

  it('reaches a loopback registry over plain HTTP without being told', async () => {
    const reg = await fake((req, res) => {
      if (req.url === '/v2/') return json(res, 200, {});
      json(res, 200, { tags: ['x'], name: 'app' });
    });
    for (const host of [reg.host, `localhost:${reg.host.split(':')[1]}`])
      expect(await listTags(client(host, { insecureRegistries: [] }), 'app')).toEqual(['x']);
  });
});

describe('uploads against a fake registry', () => {
  const data = Buffer.from('some blob content');
  const digest = sha256Digest(data);

  it('resolves a relative Location keeping its query, and PUTs monolithically', async () => {
    const reg = await fake((req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/v2/') return json(res, 200, {});
      if (req.method === 'HEAD') return json(res, 404, {});
      if (req.method === 'POST') {
        res.writeHead(202, { location: '/upload/s1?_state=abc' });
        return res.end();
      }
      res.writeHead(201, { 'docker-content-digest': url.searchParams.get('digest') ?? '' });
      res.end();
    });
    const r = await putBlob(client(reg.host), 'app', {
      digest,
      size: data.length,
      open: () => Readable.from([data]),
    });
    expect(r).toEqual({ digest, size: data.length, outcome: 'uploaded' });
    const put = reg.seen.find((s) => s.method === 'PUT')!;
    expect(put.url).toBe(`/upload/s1?_state=abc&digest=${encodeURIComponent(digest)}`);
    expect(put.body.equals(data)).toBe(true);
  });

  it('streams with PATCH (accepting 201/204) when the size is unknown, then PUTs the computed digest', async () => {
    const reg = await fake((req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/v2/') return json(res, 200, {});
      if (req.method === 'POST') {
        res.writeHead(202, { location: `http://${req.headers.host}/up/1?s=1` });
        return res.end();
      }
      if (req.method === 'PATCH') {
        res.writeHead(204, { location: '/up/1?s=2' });
        return res.end();
      }
      res.writeHead(201);
      res.end();
    });
    const r = await putBlob(client(reg.host), 'app', {
      open: () => Readable.from([data.subarray(0, 5), data.subarray(5)]),
    });
    expect(r).toEqual({ digest, size: data.length, outcome: 'uploaded' });
    expect(reg.seen.map((s) => `${s.method} ${s.url}`).slice(1)).toEqual([
      'POST /v2/app/blobs/uploads/',
      'PATCH /up/1?s=1',
      `PUT /up/1?s=2&digest=${encodeURIComponent(digest)}`,
    ]);
    expect(reg.seen.find((s) => s.method === 'PATCH')!.body.equals(data)).toBe(true);
  });

  it('restarts a failed upload from a re-opened source, and deletes the failed session', async () => {
    let puts = 0;
    const reg = await fake((req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/v2/') return json(res, 200, {});
      if (req.method === 'HEAD') return json(res, 404, {});
      if (req.method === 'POST') {
        res.writeHead(202, { location: `/up/${Math.random().toString(16).slice(2)}` });
        return res.end();
      }
      if (req.method === 'DELETE') {
        res.writeHead(204);
        return res.end();
      }
      if (puts++ === 0) return json(res, 502, {});
      res.writeHead(201);
      res.end();
    });
    let opened = 0;
    const { delays, sleep } = sleeps();
    const r = await putBlob(client(reg.host, { retry: { sleep } }), 'app', {
      digest,
      size: data.length,
      open: () => {
        opened++;
        return Readable.from([data]);
      },
    });
    expect(r.outcome).toBe('uploaded');
    expect(opened).toBe(2);
    expect(delays).toHaveLength(1);
    const methods = reg.seen.map((s) => s.method);
    expect(methods.filter((m) => m === 'DELETE')).toHaveLength(1);
    expect(methods.filter((m) => m === 'PUT')).toHaveLength(2);
  });

  /** A registry that accepts every upload; records what it got. */
  async function acceptingRegistry() {
    return fake((req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/v2/') return json(res, 200, {});
      if (req.method === 'HEAD') return json(res, 404, {});
      if (req.method === 'POST' || req.method === 'PATCH') {
        res.writeHead(202, { location: '/up/x' });
        return res.end();
      }
      res.writeHead(req.method === 'DELETE' ? 204 : 201);
      res.end();
    });
  }

  it('reports a failing source as such, not as a registry failure, and cancels the session', async () => {
    const reg = await acceptingRegistry();
    const failing = () =>
      new Readable({
        read() {
          this.destroy(Object.assign(new Error('EIO: disk on fire'), { code: 'EIO' }));
        },
      });
    for (const input of [{ digest, size: data.length }, {}]) {
      const err = await putBlob(client(reg.host), 'app', { ...input, open: failing }).catch((e) => e);
      expect(err).toMatchObject({ code: 'BLOB_SOURCE_FAILED' });
      expect(err.message).toContain('reading the source failed: EIO: disk on fire');
      expect(reg.seen.at(-1)!.method).toBe('DELETE');
    }
  });

  it('refuses a source shorter than the size it was announced with', async () => {
    const reg = await acceptingRegistry();
    const err = await putBlob(client(reg.host), 'app', {
      digest,
      size: data.length + 10,
      open: () => Readable.from([data]),
    }).catch((e) => e);
    expect(err).toMatchObject({ code: 'SIZE_INVALID' });
    expect(reg.seen.filter((s) => s.method === 'PUT' && s.body.length > 0)).toHaveLength(0);
  });

  it('runs at most `concurrency` uploads at once per client', async () => {
    // Counted on the server, exactly: a session is open from its POST until its PUT is answered, and the
    // client holds its slot over that whole span.
    let open = 0;
    let peak = 0;
    const reg = await fake(async (req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/v2/') return json(res, 200, {});
      if (req.method === 'HEAD') return json(res, 404, {});
      if (req.method === 'POST') {
        open++;
        peak = Math.max(peak, open);
        res.writeHead(202, { location: `/up/${Math.random().toString(16).slice(2)}` });
        return res.end();
      }
      // Hold each upload a moment so that uploads would overlap if the client let them.
      await new Promise((r) => setTimeout(r, 20));
      open--;
      res.writeHead(201);
      res.end();
    });
    const c = client(reg.host, { concurrency: 2 });
    const blobs = [1, 2, 3, 4, 5, 6].map((i) => Buffer.from(`blob ${i}`));
    await Promise.all(
      blobs.map((b) =>
        putBlob(c, 'app', { digest: sha256Digest(b), size: b.length, open: () => Readable.from([b]) }),
      ),
    );
    expect(peak).toBe(2);
    expect(open).toBe(0);
  });

  it('abandons a streamed upload whose bytes do not match the claimed digest', async () => {
    const reg = await fake((req, res) => {
      const url = new URL(req.url, 'http://x');
      if (url.pathname === '/v2/') return json(res, 200, {});
      if (req.method === 'HEAD') return json(res, 404, {});
      if (req.method === 'POST' || req.method === 'PATCH') {
        res.writeHead(202, { location: '/up/x' });
        return res.end();
      }
      res.writeHead(req.method === 'DELETE' ? 204 : 201);
      res.end();
    });
    const wrong = `sha256:${createHash('sha256').update('other').digest('hex')}` as Digest;
    const err = await putBlob(client(reg.host), 'app', {
      digest: wrong,
      open: () => Readable.from([data]),
    }).catch((e) => e);
    expect(err).toMatchObject({ code: 'DIGEST_INVALID' });
    expect(err.message).toContain(digest);
    const methods = reg.seen.map((s) => s.method);
    expect(methods).not.toContain('PUT');
    expect(methods.at(-1)).toBe('DELETE');
  });
});
