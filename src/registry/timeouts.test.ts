import type { LookupFunction } from 'node:net';
import { type Server, type Socket, createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { text } from 'node:stream/consumers';
import { afterEach, describe, expect, it } from 'vitest';
import { sha256Digest } from '../oci/digest.js';
import { getBlob } from './blobs.js';
import { RegistryClient, type RegistryClientOptions } from './client.js';
import { getManifest } from './manifests.js';
import { resolveRegistryTimeouts } from './timeouts.js';

/**
 * Registries that accept the connection and then misbehave, on loopback: silent, dripping headers, stalling
 * a body. Every case must end in REGISTRY_TIMEOUT naming the URL and the timeout that fired, within the
 * retry budget and the overall deadline. Timeouts are small so the tests are quick; nothing asserts a time.
 */
type Behaviour = (socket: Socket, requestLine: string, head: string) => void;

const servers: Server[] = [];
const sockets = new Set<Socket>();
const clients: RegistryClient[] = [];
afterEach(async () => {
  await Promise.all(clients.splice(0).map((c) => c.close()));
  for (const s of sockets) s.destroy();
  sockets.clear();
  await Promise.all(servers.splice(0).map((s) => new Promise((r) => s.close(r))));
});

/** A raw TCP server: `/v2/` answers 200; other requests get `behaviour`; a TLS hello is dropped. */
async function misbehaving(behaviour: Behaviour): Promise<{ host: string; requests: string[] }> {
  const requests: string[] = [];
  const server = createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => {});
    socket.once('data', (chunk: Buffer) => {
      const head = chunk.toString('latin1');
      const line = head.split('\r\n')[0] ?? '';
      if (!/^[A-Z]+ \//.test(line)) return socket.destroy(); // TLS: the insecure ping falls back to HTTP
      if (line.startsWith('GET /v2/ ')) {
        socket.end(
          'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{}',
        );
        return;
      }
      requests.push(line);
      behaviour(socket, line, head);
    });
  });
  servers.push(server);
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
  return { host: `127.0.0.1:${(server.address() as AddressInfo).port}`, requests };
}

function client(host: string, opts: Partial<RegistryClientOptions> = {}): RegistryClient {
  const c = new RegistryClient({
    registry: host,
    insecureRegistries: [host],
    credentials: async () => undefined,
    env: {},
    retry: { attempts: 3, sleep: async () => {} },
    ...opts,
  });
  clients.push(c);
  return c;
}

const silent: Behaviour = () => {};

function drip(socket: Socket, text: string, everyMs: number): void {
  let i = 0;
  const timer = setInterval(() => {
    if (i < text.length && !socket.destroyed) socket.write(text[i++]!);
    else clearInterval(timer);
  }, everyMs);
  socket.on('close', () => clearInterval(timer));
}

describe('registry timeouts', () => {
  it('connect: a peer that accepts TCP but never completes TLS', async () => {
    let connections = 0;
    const server = createServer((socket) => {
      connections++;
      sockets.add(socket);
      socket.on('error', () => {});
    });
    servers.push(server);
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()));
    // Neither insecure nor loopback (a name answered on 127.0.0.1): HTTPS only, whose handshake is part of
    // connecting.
    const host = `registry.example:${(server.address() as AddressInfo).port}`;
    const lookup: LookupFunction = (_name, opts, cb) =>
      opts.all ? cb(null, [{ address: '127.0.0.1', family: 4 }]) : cb(null, '127.0.0.1', 4);
    const c = client(host, { insecureRegistries: [], lookup, timeouts: { connectMs: 300 } });
    const err = await getManifest(c, 'app', 'v1').catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'REGISTRY_TIMEOUT',
      message: expect.stringMatching(
        /GET https:\/\/registry\.example:\d+\/v2\/ failed: the connect timeout \(0\.3 s\) fired \(3 attempts/,
      ),
      hint: expect.stringContaining('PACKFARM_REGISTRY_CONNECT_TIMEOUT'),
    });
    expect(connections).toBe(3);
  });

  it('response headers: a registry that never answers a request, retried within the budget', async () => {
    const reg = await misbehaving(silent);
    const err = await getManifest(client(reg.host, { timeouts: { headersMs: 300 } }), 'app', 'v1').catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      code: 'REGISTRY_TIMEOUT',
      message: expect.stringContaining(
        `GET http://${reg.host}/v2/app/manifests/v1 failed: the response-headers timeout (0.3 s) fired (3 attempts`,
      ),
      hint: expect.stringContaining('PACKFARM_REGISTRY_HEADERS_TIMEOUT'),
    });
    expect(reg.requests).toHaveLength(3);
  });

  it('response headers: a registry dripping its headers one byte at a time', async () => {
    const reg = await misbehaving((socket) =>
      drip(socket, 'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 2\r\n\r\n{}', 100),
    );
    const err = await getManifest(
      client(reg.host, { timeouts: { headersMs: 500 }, retry: { attempts: 1 } }),
      'app',
      'v1',
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'REGISTRY_TIMEOUT',
      message: expect.stringContaining('the response-headers timeout (0.5 s) fired (1 attempt in'),
    });
  });

  it('body idle: a manifest body that stops mid-way, fetched again within the budget', async () => {
    const reg = await misbehaving((socket) =>
      socket.write(
        'HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 500\r\n\r\n{"schema',
      ),
    );
    const err = await getManifest(client(reg.host, { timeouts: { bodyIdleMs: 300 } }), 'app', 'v1').catch(
      (e: unknown) => e,
    );
    expect(err).toMatchObject({
      code: 'REGISTRY_TIMEOUT',
      message: expect.stringContaining(
        `GET http://${reg.host}/v2/app/manifests/v1 failed: the body idle timeout (0.3 s) fired (3 attempts`,
      ),
      hint: expect.stringContaining('PACKFARM_REGISTRY_BODY_TIMEOUT'),
    });
    expect(reg.requests).toHaveLength(3);
  });

  it('overall deadline: a manifest body dripping slower than any use but faster than the idle timeout', async () => {
    const reg = await misbehaving((socket) => {
      socket.write(
        'HTTP/1.1 200 OK\r\nContent-Type: application/vnd.oci.image.manifest.v1+json\r\nContent-Length: 500\r\n\r\n',
      );
      drip(socket, ' '.repeat(500), 100);
    });
    const err = await getManifest(
      client(reg.host, { timeouts: { bodyIdleMs: 5_000, deadlineMs: 700 } }),
      'app',
      'v1',
    ).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'REGISTRY_TIMEOUT',
      message: expect.stringContaining(
        `GET http://${reg.host}/v2/app/manifests/v1 failed: the overall deadline (0.7 s) fired`,
      ),
      hint: expect.stringContaining('PACKFARM_REGISTRY_DEADLINE'),
    });
  });

  it('body idle: a blob download that stalls names the blob URL', async () => {
    const blob = Buffer.alloc(1000, 7);
    const reg = await misbehaving((socket) => {
      socket.write('HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n');
      socket.write(blob.subarray(0, 100));
    });
    const digest = sha256Digest(blob);
    const stream = await getBlob(client(reg.host, { timeouts: { bodyIdleMs: 300 } }), 'app', digest);
    const err = await text(stream).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'REGISTRY_TIMEOUT',
      message: expect.stringContaining(`/v2/app/blobs/${digest} failed: the body idle timeout (0.3 s) fired`),
    });
  });

  it('are configured from PACKFARM_REGISTRY_* (seconds), and a bad value is refused naming it', async () => {
    const reg = await misbehaving(silent);
    const c = client(reg.host, { env: { PACKFARM_REGISTRY_HEADERS_TIMEOUT: '0.2' }, retry: { attempts: 1 } });
    await expect(getManifest(c, 'app', 'v1')).rejects.toMatchObject({
      code: 'REGISTRY_TIMEOUT',
      message: expect.stringContaining('response-headers timeout (0.2 s)'),
    });
    expect(() => resolveRegistryTimeouts({ PACKFARM_REGISTRY_DEADLINE: 'soon' })).toThrow(
      expect.objectContaining({
        code: 'INVALID_ENV',
        message: expect.stringContaining('PACKFARM_REGISTRY_DEADLINE'),
      }),
    );
  });
});

/** The `Range: bytes=N-` start a request asked for, if any. */
function rangeStart(head: string): number | undefined {
  const m = /\r\nrange: bytes=(\d+)-\r\n/i.exec(head);
  return m ? Number(m[1]) : undefined;
}

describe('blob downloads that stall or break off', () => {
  const blob = Buffer.from(Array.from({ length: 5000 }, (_, i) => i % 251));
  const digest = sha256Digest(blob);
  const full = (socket: Socket) => {
    socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\nConnection: close\r\n\r\n`);
    socket.end(blob);
  };

  it('resumes a body that stalled once with a Range request, and delivers the verified blob', async () => {
    const heads: string[] = [];
    const reg = await misbehaving((socket, _line, head) => {
      heads.push(head);
      if (heads.length === 1) {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`);
        socket.write(blob.subarray(0, 1200));
        return;
      }
      const from = rangeStart(head) ?? 0;
      socket.write(
        `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${from}-${blob.length - 1}/${blob.length}\r\n` +
          `Content-Length: ${blob.length - from}\r\nConnection: close\r\n\r\n`,
      );
      socket.end(blob.subarray(from));
    });
    const stream = await getBlob(client(reg.host, { timeouts: { bodyIdleMs: 300 } }), 'app', digest);
    const got = Buffer.concat(await stream.toArray());
    expect(got.equals(blob)).toBe(true);
    expect(reg.requests).toHaveLength(2);
    expect(rangeStart(heads[1]!)).toBe(1200);
  });

  it('restarts a body that broke off when the registry ignores Range, checking the re-sent prefix', async () => {
    let n = 0;
    const reg = await misbehaving((socket) => {
      if (++n === 1) {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`);
        socket.write(blob.subarray(0, 700));
        setTimeout(() => socket.destroy(), 50); // closed mid-body
        return;
      }
      full(socket);
    });
    const stream = await getBlob(client(reg.host), 'app', digest);
    const got = Buffer.concat(await stream.toArray());
    expect(got.equals(blob)).toBe(true);
    expect(reg.requests).toHaveLength(2);
  });

  it('never splices different bytes: a retry whose prefix differs fails with DIGEST_MISMATCH', async () => {
    let n = 0;
    const other = Buffer.from(blob).fill(9, 0, 10);
    const reg = await misbehaving((socket) => {
      if (++n === 1) {
        socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`);
        socket.write(blob.subarray(0, 700));
        setTimeout(() => socket.destroy(), 50);
        return;
      }
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${other.length}\r\nConnection: close\r\n\r\n`);
      socket.end(other);
    });
    const stream = await getBlob(client(reg.host), 'app', digest);
    const received: Buffer[] = [];
    stream.on('data', (c: Buffer) => received.push(c));
    const err = await new Promise((resolve) => stream.on('error', resolve));
    expect(err).toMatchObject({
      code: 'DIGEST_MISMATCH',
      message: expect.stringContaining('sent different bytes on a retry'),
    });
    expect(Buffer.concat(received).equals(blob.subarray(0, 700))).toBe(true);
  });

  it('a blob whose body always stalls fails naming the URL, the timeout and the attempts', async () => {
    const reg = await misbehaving((socket, _line, head) => {
      const from = rangeStart(head);
      socket.write(
        from === undefined
          ? `HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`
          : `HTTP/1.1 206 Partial Content\r\nContent-Range: bytes ${from}-${blob.length - 1}/${blob.length}\r\n` +
              `Content-Length: ${blob.length - from}\r\n\r\n`,
      );
      socket.write(blob.subarray(from ?? 0, (from ?? 0) + 100));
    });
    const stream = await getBlob(client(reg.host, { timeouts: { bodyIdleMs: 300 } }), 'app', digest);
    const err = await text(stream).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'REGISTRY_TIMEOUT',
      message: expect.stringMatching(
        new RegExp(
          `GET http://${reg.host}/v2/app/blobs/${digest} failed: the body idle timeout \\(0\\.3 s\\) fired \\(3 attempts in [\\d.]+ s; 300 of 5000 bytes received\\)`,
        ),
      ),
      hint: expect.stringContaining('PACKFARM_REGISTRY_BODY_TIMEOUT'),
    });
    expect(reg.requests).toHaveLength(3);
  });

  it('stops retrying when the next attempt would pass the overall deadline', async () => {
    const reg = await misbehaving((socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`);
      socket.write(blob.subarray(0, 100));
    });
    const c = client(reg.host, {
      timeouts: { bodyIdleMs: 300, deadlineMs: 1500 },
      retry: { attempts: 10, baseDelayMs: 0, sleep: async () => {} },
    });
    const err = await text(await getBlob(c, 'app', digest)).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'REGISTRY_TIMEOUT',
      message: expect.stringContaining('the body idle timeout (0.3 s) fired ('),
    });
    // The budget allows 10 attempts; the deadline (counted from the last byte delivered) ends them sooner.
    const attempts = Number(/fired \((\d+) attempts? in/.exec((err as Error).message)?.[1]);
    expect(attempts).toBe(reg.requests.length);
    expect(attempts).toBeLessThan(10);
  });

  it('a connection closed mid-body on every attempt fails naming the URL and the attempts', async () => {
    const reg = await misbehaving((socket) => {
      socket.write(`HTTP/1.1 200 OK\r\nContent-Length: ${blob.length}\r\n\r\n`);
      socket.write(blob.subarray(0, 100));
      setTimeout(() => socket.destroy(), 20);
    });
    const err = await text(await getBlob(client(reg.host), 'app', digest)).catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'REGISTRY_UNREACHABLE',
      message: expect.stringMatching(
        new RegExp(`GET http://${reg.host}/v2/app/blobs/${digest} failed: .*\\(3 attempts in [\\d.]+ s`),
      ),
    });
    expect(reg.requests).toHaveLength(3);
  });
});

describe('a Retry-After longer than packfarm waits', () => {
  it('fails at once and says so (503)', async () => {
    const reg = await misbehaving((socket) =>
      socket.end('HTTP/1.1 503 Service Unavailable\r\nRetry-After: 3600\r\nContent-Length: 0\r\n\r\n'),
    );
    const err = await getManifest(client(reg.host), 'app', 'v1').catch((e: unknown) => e);
    expect(err).toMatchObject({
      code: 'REGISTRY_ERROR',
      message: expect.stringContaining(
        'HTTP 503; the registry asked to retry after 3600 s (Retry-After: 3600), longer than packfarm waits (60 s)',
      ),
    });
    expect(reg.requests).toHaveLength(1);
  });
});
