import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import {
  Agent,
  type IncomingMessage,
  type Server,
  type ServerResponse,
  createServer,
  request as httpRequest,
} from 'node:http';
import { type AddressInfo, createServer as createNetServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Transform } from 'node:stream';
import { execa } from 'execa';
import { type TokenIssuer, type TokenIssuerOptions, startTokenIssuer } from './token-issuer.js';

/**
 * A real registry for integration tests: Debian's `docker-registry` (CNCF distribution 2.8) on a loopback
 * port, with filesystem storage in a temp dir, deletes enabled, plain HTTP.
 *
 *   const reg = await startRegistry();                      // no auth
 *   const reg = await startRegistry({ auth: 'htpasswd' });  // Basic, users from `users` (bcrypt htpasswd)
 *   const reg = await startRegistry({ auth: 'token' });     // Bearer, our token issuer (token-issuer.ts)
 *   …
 *   await reg.stop();                                       // kills it and removes every temp file
 *
 * By default the registry sits behind a **counting proxy**: `reg.host` is the proxy (use it for everything),
 * `reg.directHost` the registry itself. The proxy passes requests through unchanged (Host header included,
 * so the registry's Location headers point back at the proxy) and records each one in `reg.requests`;
 * `reg.counters()` sums them up, `reg.resetCounters()` starts over. To prove "no layer was uploaded":
 *
 *   reg.resetCounters();  …rebuild…;  expect(reg.counters().blobUploads).toBe(0);
 *
 * counters(): requests; byKind (ping/manifest/blob/upload/tags/other); blobUploads (upload sessions
 * completed with 201 — blobs whose bytes were sent); bytesUploaded (request bytes of upload requests);
 * mounts (cross-repository mounts answered 201); blobHeads; blobGets / bytesDownloaded (blob GETs answered
 * 200 and their bytes); manifestGets; manifestPuts (answered 201).
 * Records are complete when the client sees the response end, so counters are exact right after a call.
 */
export interface RegistryUser {
  name: string;
  password: string;
}

export interface StartRegistryOptions {
  auth?: 'none' | 'htpasswd' | 'token';
  /** Users for htpasswd/token (default: one user `packfarm` / `packfarm-secret`). */
  users?: RegistryUser[];
  /** Front the registry with the counting proxy (default true). */
  proxy?: boolean;
  /** Token issuer options (token auth only). */
  token?: Omit<TokenIssuerOptions, 'dir' | 'users'>;
}

export type RequestKind = 'ping' | 'manifest' | 'blob' | 'upload' | 'tags' | 'other';

export interface ProxiedRequest {
  method: string;
  /** Path without query. */
  path: string;
  query: string;
  kind: RequestKind;
  /** Repository named in the path, when any. */
  repository?: string;
  status: number;
  requestBytes: number;
  responseBytes: number;
}

export interface RegistryCounters {
  requests: number;
  byKind: Record<RequestKind, number>;
  blobUploads: number;
  bytesUploaded: number;
  mounts: number;
  blobHeads: number;
  blobGets: number;
  bytesDownloaded: number;
  manifestGets: number;
  manifestPuts: number;
}

export interface CountingProxy {
  host: string;
  requests: ProxiedRequest[];
  counters(): RegistryCounters;
  reset(): void;
  /** Bytes of request bodies received so far, as they stream (for backpressure checks). */
  bytesReceived(): number;
  stop(): Promise<void>;
}

export interface TestRegistry {
  /** `127.0.0.1:PORT` to use in references (the proxy when enabled). */
  host: string;
  /** `http://host`. */
  url: string;
  /** The registry itself, bypassing the proxy. */
  directHost: string;
  /** Temp dir holding config, storage, htpasswd, token keys. */
  rootDir: string;
  /** The storage root (`rootdirectory`). */
  storageDir: string;
  users: RegistryUser[];
  auth: 'none' | 'htpasswd' | 'token';
  tokenIssuer?: TokenIssuer;
  /** Undefined without the proxy. */
  proxy?: CountingProxy;
  requests: ProxiedRequest[];
  counters(): RegistryCounters;
  resetCounters(): void;
  /** The registry's own stderr/stdout so far (for failure messages). */
  output(): string;
  stop(): Promise<void>;
}

const DEFAULT_USERS: RegistryUser[] = [{ name: 'packfarm', password: 'packfarm-secret' }];

function requireTool(bin: string, pkg: string): void {
  const found = spawnSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' }).status === 0;
  if (!found) {
    throw new Error(`${bin} is not installed; the registry tests need it: apt-get install ${pkg}`);
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createNetServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

function probe(port: number): Promise<number | undefined> {
  return new Promise((resolve) => {
    const req = httpRequest(
      { host: '127.0.0.1', port, path: '/v2/', method: 'GET', timeout: 1000, agent: false },
      (res) => {
        res.resume();
        resolve(res.statusCode);
      },
    );
    req.on('error', () => resolve(undefined));
    req.on('timeout', () => {
      req.destroy();
      resolve(undefined);
    });
    req.end();
  });
}

async function htpasswdFile(users: RegistryUser[], path: string): Promise<void> {
  requireTool('htpasswd', 'apache2-utils');
  const lines: string[] = [];
  for (const u of users) {
    // distribution accepts bcrypt entries only.
    const { stdout } = await execa('htpasswd', ['-Bbn', u.name, u.password]);
    lines.push(stdout.trim());
  }
  await writeFile(path, `${lines.join('\n')}\n`);
}

function classify(path: string): { kind: RequestKind; repository?: string } {
  if (path === '/v2/' || path === '/v2') return { kind: 'ping' };
  const m = /^\/v2\/(.+?)\/(manifests|blobs|tags)\/(.*)$/.exec(path);
  if (!m) return { kind: 'other' };
  const repository = m[1]!;
  if (m[2] === 'manifests') return { kind: 'manifest', repository };
  if (m[2] === 'tags') return { kind: 'tags', repository };
  if (m[3]!.startsWith('uploads')) return { kind: 'upload', repository };
  return { kind: 'blob', repository };
}

function emptyCounters(): RegistryCounters {
  return {
    requests: 0,
    byKind: { ping: 0, manifest: 0, blob: 0, upload: 0, tags: 0, other: 0 },
    blobUploads: 0,
    bytesUploaded: 0,
    mounts: 0,
    blobHeads: 0,
    blobGets: 0,
    bytesDownloaded: 0,
    manifestGets: 0,
    manifestPuts: 0,
  };
}

export function summarize(requests: readonly ProxiedRequest[]): RegistryCounters {
  const c = emptyCounters();
  for (const r of requests) {
    c.requests++;
    c.byKind[r.kind]++;
    if (r.kind === 'upload') {
      c.bytesUploaded += r.requestBytes;
      if (r.method === 'PUT' && r.status === 201) c.blobUploads++;
      if (r.method === 'POST' && r.status === 201 && /(^|&)mount=/.test(r.query)) c.mounts++;
    }
    if (r.kind === 'blob' && r.method === 'HEAD') c.blobHeads++;
    if (r.kind === 'blob' && r.method === 'GET' && r.status === 200) {
      c.blobGets++;
      c.bytesDownloaded += r.responseBytes;
    }
    if (r.kind === 'manifest' && r.method === 'GET') c.manifestGets++;
    if (r.kind === 'manifest' && r.method === 'PUT' && r.status === 201) c.manifestPuts++;
  }
  return c;
}

const HOP_BY_HOP = new Set(['connection', 'keep-alive', 'proxy-connection', 'upgrade', 'te', 'trailer']);

/**
 * An HTTP pass-through to `target` (host:port) on another loopback port that records every request.
 * Bodies stream through (nothing is buffered whole), so it is fine for large uploads.
 */
export async function startCountingProxy(target: string): Promise<CountingProxy> {
  const [targetHost, targetPort] = [
    target.slice(0, target.lastIndexOf(':')),
    Number(target.slice(target.lastIndexOf(':') + 1)),
  ];
  const agent = new Agent({ keepAlive: true, maxSockets: 64 });
  const requests: ProxiedRequest[] = [];
  let received = 0;

  const server: Server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://proxy');
    const { kind, repository } = classify(url.pathname);
    let requestBytes = 0;
    const headers: Record<string, string | string[]> = {};
    for (const [k, v] of Object.entries(req.headers)) {
      if (v !== undefined && !HOP_BY_HOP.has(k)) headers[k] = v;
    }
    const upstream = httpRequest(
      { host: targetHost, port: targetPort, method: req.method, path: req.url, headers, agent },
      (up) => {
        const outHeaders: Record<string, string | string[]> = {};
        for (const [k, v] of Object.entries(up.headers)) {
          if (v !== undefined && !HOP_BY_HOP.has(k)) outHeaders[k] = v;
        }
        res.writeHead(up.statusCode ?? 502, outHeaders);
        let responseBytes = 0;
        const counter = new Transform({
          transform(chunk: Buffer, _e, cb) {
            responseBytes += chunk.length;
            cb(null, chunk);
          },
          flush(cb) {
            // Recorded before the client can see the end of the response.
            requests.push({
              method: req.method ?? '',
              path: url.pathname,
              query: url.search.replace(/^\?/, ''),
              kind,
              ...(repository ? { repository } : {}),
              status: up.statusCode ?? 0,
              requestBytes,
              responseBytes,
            });
            cb();
          },
        });
        up.pipe(counter).pipe(res);
      },
    );
    upstream.on('error', (err) => {
      if (!res.headersSent) res.writeHead(502, { 'content-type': 'text/plain' });
      res.end(`proxy: ${err.message}`);
    });
    req.on('data', (chunk: Buffer) => {
      requestBytes += chunk.length;
      received += chunk.length;
    });
    req.on('aborted', () => upstream.destroy());
    req.pipe(upstream);
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  return {
    host: `127.0.0.1:${port}`,
    requests,
    counters: () => summarize(requests),
    reset: () => {
      requests.length = 0;
    },
    bytesReceived: () => received,
    stop: () =>
      new Promise<void>((resolve) => {
        server.closeAllConnections();
        server.close(() => {
          agent.destroy();
          resolve();
        });
      }),
  };
}

async function stopProcess(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
  await exited;
  clearTimeout(timer);
}

export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  requireTool('docker-registry', 'docker-registry');
  const auth = opts.auth ?? 'none';
  const users = opts.users ?? DEFAULT_USERS;
  const rootDir = await mkdtemp(join(tmpdir(), 'packfarm-registry-'));
  const storageDir = join(rootDir, 'storage');
  await mkdir(storageDir);
  const cleanups: (() => Promise<void>)[] = [() => rm(rootDir, { recursive: true, force: true })];
  const cleanup = async () => {
    for (const c of cleanups.reverse()) await c().catch(() => {});
  };

  try {
    let authConfig: Record<string, unknown> | undefined;
    let tokenIssuer: TokenIssuer | undefined;
    if (auth === 'htpasswd') {
      const path = join(rootDir, 'htpasswd');
      await htpasswdFile(users, path);
      authConfig = { htpasswd: { realm: 'packfarm-test', path } };
    } else if (auth === 'token') {
      tokenIssuer = await startTokenIssuer({ ...opts.token, dir: rootDir, users });
      const issuer = tokenIssuer;
      cleanups.push(() => issuer.stop());
      authConfig = {
        token: {
          realm: issuer.realm,
          service: issuer.service,
          issuer: issuer.issuer,
          rootcertbundle: issuer.certPath,
        },
      };
    }

    let child: ChildProcess | undefined;
    let output = '';
    let port = 0;
    // A free port can be taken between our probe and the registry's bind; try a few.
    for (let attempt = 1; attempt <= 3 && !child; attempt++) {
      port = await freePort();
      // JSON is valid YAML, and spares us any quoting questions in paths.
      const config = {
        version: '0.1',
        log: { level: 'warn', formatter: 'text', accesslog: { disabled: true } },
        storage: {
          filesystem: { rootdirectory: storageDir },
          delete: { enabled: true },
          maintenance: { uploadpurging: { enabled: false } },
        },
        http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString('hex') },
        health: { storagedriver: { enabled: false } },
        ...(authConfig ? { auth: authConfig } : {}),
      };
      const configPath = join(rootDir, 'config.yml');
      await writeFile(configPath, JSON.stringify(config, null, 2));
      output = '';
      // A clean environment: REGISTRY_* variables from the host would override the config.
      const proc = spawn('docker-registry', ['serve', configPath], {
        env: { PATH: process.env.PATH ?? '/usr/bin:/bin', HOME: rootDir },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      const collect = (d: Buffer) => {
        output = (output + d.toString('utf8')).slice(-64 * 1024);
      };
      proc.stdout.on('data', collect);
      proc.stderr.on('data', collect);
      let exited = false;
      proc.once('exit', () => {
        exited = true;
      });
      // Bounded wait for /v2/ to answer (200, or 401 with auth).
      const deadline = Date.now() + 20_000;
      let status: number | undefined;
      while (!exited && Date.now() < deadline) {
        status = await probe(port);
        if (status !== undefined) break;
        await new Promise((r) => setTimeout(r, 100));
      }
      if (status !== undefined && !exited) {
        child = proc;
        break;
      }
      await stopProcess(proc);
      if (!/address already in use/i.test(output) || attempt === 3) {
        throw new Error(
          `docker-registry did not start on 127.0.0.1:${port}${exited ? ` (exited with ${proc.exitCode ?? proc.signalCode})` : ' within 20 s'}:\n${output}`,
        );
      }
    }
    const registryProcess = child!;
    cleanups.push(() => stopProcess(registryProcess));
    const directHost = `127.0.0.1:${port}`;

    let proxy: CountingProxy | undefined;
    if (opts.proxy !== false) {
      proxy = await startCountingProxy(directHost);
      const p = proxy;
      cleanups.push(() => p.stop());
    }
    const host = proxy?.host ?? directHost;
    let stopped = false;
    return {
      host,
      url: `http://${host}`,
      directHost,
      rootDir,
      storageDir,
      users,
      auth,
      ...(tokenIssuer ? { tokenIssuer } : {}),
      ...(proxy ? { proxy } : {}),
      requests: proxy?.requests ?? [],
      counters: () => {
        if (!proxy) throw new Error('counters() needs the counting proxy (startRegistry({ proxy: true }))');
        return proxy.counters();
      },
      resetCounters: () => proxy?.reset(),
      output: () => output,
      stop: async () => {
        if (stopped) return;
        stopped = true;
        await cleanup();
      },
    };
  } catch (err) {
    await cleanup();
    throw err;
  }
}

/**
 * A temp DOCKER_CONFIG directory whose config.json holds `auths` for `registry` (base64 user:pass).
 * Returns the directory; remove it when done.
 */
export async function writeDockerConfig(
  registry: string,
  user: RegistryUser,
  extra: Record<string, unknown> = {},
): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'packfarm-docker-config-'));
  const auth = Buffer.from(`${user.name}:${user.password}`).toString('base64');
  await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { [registry]: { auth } }, ...extra }));
  return dir;
}
