import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { type TestImage, writeTestImage } from '../helpers/images.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';

/**
 * Credentials as podman users keep them: `packfarm login`/`logout` write containers-auth.json, podman and
 * skopeo read what packfarm wrote, packfarm reads what `podman login` wrote, and refused credentials are
 * reported as refused, naming the file they came from. Against a real registry with htpasswd (Basic) auth;
 * packfarm runs as a process (bin/packfarm.js, dist/) with every credential location inside a temp dir.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const bin = join(repoRoot, 'bin', 'packfarm.js');

let root: string;
let registry: TestRegistry;
let env: NodeJS.ProcessEnv;
let primary: string;
let image: TestImage;

function packfarm(args: string[], opts: { input?: string; env?: NodeJS.ProcessEnv } = {}) {
  return execa('node', [bin, ...args], {
    env: opts.env ?? env,
    extendEnv: false,
    reject: false,
    ...(opts.input !== undefined ? { input: opts.input } : {}),
  });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-login-'));
  registry = await startRegistry({ auth: 'htpasswd' });
  env = {
    PATH: process.env.PATH,
    HOME: join(root, 'home'),
    XDG_RUNTIME_DIR: join(root, 'run'),
    DOCKER_CONFIG: join(root, 'docker'),
    PACKFARM_HOME: join(root, 'pf'),
  };
  primary = join(root, 'run', 'containers', 'auth.json');
  const src = await openLayoutStore(join(root, 'src'), { create: true });
  image = await writeTestImage(src, { tag: 'v1' });
}, 120_000);

afterAll(async () => {
  await registry?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('packfarm login / logout', () => {
  it('refuses wrong credentials without writing anything, naming the registry', async () => {
    const r = await packfarm(['login', registry.host, '-u', 'packfarm', '--password-stdin'], {
      input: 'wrong\n',
    });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      `error: ${registry.host} refused the credentials from login for ${registry.host}`,
    );
    await expect(stat(primary)).rejects.toMatchObject({ code: 'ENOENT' });
  });

  it('stores checked credentials in $XDG_RUNTIME_DIR/containers/auth.json (0600) that skopeo uses', async () => {
    const r = await packfarm(['login', registry.host, '-u', 'packfarm', '--password-stdin'], {
      input: 'packfarm-secret\n',
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Login Succeeded: ${registry.host} (credentials stored in ${primary})`);
    expect((await stat(primary)).mode & 0o777).toBe(0o600);
    const doc = JSON.parse(await readFile(primary, 'utf8'));
    expect(doc.auths[registry.host].auth).toBe(Buffer.from('packfarm:packfarm-secret').toString('base64'));

    // packfarm pushes with it…
    const push = await packfarm(['image', 'copy', `oci:${join(root, 'src')}:v1`, `${registry.host}/app:1`]);
    expect(push.exitCode, push.stderr).toBe(0);
    // …and skopeo reads the same file.
    const seen = await execa('skopeo', [
      'inspect',
      '--tls-verify=false',
      '--authfile',
      primary,
      `docker://${registry.host}/app:1`,
    ]);
    expect(JSON.parse(seen.stdout).Digest).toBe(image.digest);
  });

  it('reads what `podman login` wrote (REGISTRY_AUTH_FILE)', async () => {
    const podmanFile = join(root, 'podman-auth.json');
    await execa('podman', [
      'login',
      '--authfile',
      podmanFile,
      '--tls-verify=false',
      registry.host,
      '-u',
      'packfarm',
      '-p',
      'packfarm-secret',
    ]);
    const r = await packfarm(['image', 'inspect', `${registry.host}/app:1`, '--json'], {
      env: { ...env, XDG_RUNTIME_DIR: join(root, 'empty-run'), REGISTRY_AUTH_FILE: podmanFile },
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(image.digest);
  });

  it('says which file held credentials the registry refused, without the first-login hint', async () => {
    const bad = join(root, 'bad-auth.json');
    await writeFile(
      bad,
      JSON.stringify({
        auths: { [registry.host]: { auth: Buffer.from('packfarm:stale').toString('base64') } },
      }),
    );
    const r = await packfarm(['image', 'inspect', `${registry.host}/app:1`], {
      env: { ...env, REGISTRY_AUTH_FILE: bad },
    });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(
      `${registry.host} refused the credentials from ${bad} auths["${registry.host}"]`,
    );
    expect(r.stderr).toContain(`log in again with \`packfarm login ${registry.host}\``);
    expect(r.stderr).not.toContain('hint: log in:');
  });

  it('logout removes the entry; then the registry is anonymous and the hint says how to log in', async () => {
    const r = await packfarm(['logout', registry.host]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stdout).toContain(`Removed login credentials for ${registry.host} from ${primary}`);
    expect(JSON.parse(await readFile(primary, 'utf8')).auths).toEqual({});
    expect((await stat(primary)).mode & 0o777).toBe(0o600);
    const again = await packfarm(['logout', registry.host]);
    expect(again.exitCode).toBe(1);
    expect(again.stderr).toContain(`not logged in to ${registry.host}`);
    const anon = await packfarm(['image', 'inspect', `${registry.host}/app:1`]);
    expect(anon.exitCode).toBe(1);
    expect(anon.stderr).toContain(`hint: log in: \`packfarm login ${registry.host}\``);
  });

  it('keeps other entries and keys of the file it rewrites', async () => {
    await mkdir(dirname(primary), { recursive: true });
    await writeFile(
      primary,
      JSON.stringify({ auths: { 'other.example': { auth: 'eDp5' } }, credHelpers: { 'h.example': 'x' } }),
    );
    const r = await packfarm(['login', registry.host, '-u', 'packfarm', '-p', 'packfarm-secret']);
    expect(r.exitCode, r.stderr).toBe(0);
    const doc = JSON.parse(await readFile(primary, 'utf8'));
    expect(Object.keys(doc.auths).sort()).toEqual(['other.example', registry.host].sort());
    expect(doc.credHelpers).toEqual({ 'h.example': 'x' });
  });

  it('checks credentials against a token (Bearer) registry too', async () => {
    const tokenReg = await startRegistry({ auth: 'token' });
    try {
      const file = join(root, 'token-auth.json');
      const bad = await packfarm([
        'login',
        tokenReg.host,
        '-u',
        'packfarm',
        '-p',
        'nope',
        '--authfile',
        file,
      ]);
      expect(bad.exitCode).toBe(1);
      expect(bad.stderr).toContain(`${tokenReg.host} refused the credentials`);
      const ok = await packfarm([
        'login',
        tokenReg.host,
        '-u',
        'packfarm',
        '-p',
        'packfarm-secret',
        '--authfile',
        file,
      ]);
      expect(ok.exitCode, ok.stderr).toBe(0);
      expect(JSON.parse(await readFile(file, 'utf8')).auths[tokenReg.host].auth).toBe(
        Buffer.from('packfarm:packfarm-secret').toString('base64'),
      );
    } finally {
      await tokenReg.stop();
    }
  });
});
