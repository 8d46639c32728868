import { chmod, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import {
  type Credential,
  containersAuthPaths,
  createKeychain,
  primaryAuthFile,
  dockerConfigPath,
  normalizeRegistryKey,
  parseCnbRegistryAuth,
  resolveCredential,
  runCredentialHelper,
} from './credentials.js';

const b64 = (s: string) => Buffer.from(s).toString('base64');
/** The credential without its source (asserted on its own where it matters). */
const bare = (c: Credential | undefined) => {
  if (!c) return c;
  const { source: _source, ...rest } = c;
  return rest;
};

let dir: string;
let binDir: string;
let env: NodeJS.ProcessEnv;

// A docker-credential-<name> helper as a shell script: answers for known servers, "credentials not found"
// otherwise, and logs every server URL it was asked for.
async function writeHelper(name: string, entries: Record<string, { user: string; secret: string }>) {
  const cases = Object.entries(entries)
    .map(
      ([server, c]) =>
        `  '${server}') printf '{"ServerURL":"%s","Username":"%s","Secret":"%s"}' '${server}' '${c.user}' '${c.secret}' ;;`,
    )
    .join('\n');
  const script = `#!/bin/sh
[ "$1" = get ] || { echo "unsupported verb $1" >&2; exit 2; }
read -r server
echo "$server" >> "${join(dir, `${name}.log`)}"
case "$server" in
${cases}
  'broken.example') echo 'keychain locked' >&2; exit 3 ;;
  *) echo 'credentials not found in native keychain'; exit 1 ;;
esac
`;
  const path = join(binDir, `docker-credential-${name}`);
  await writeFile(path, script);
  await chmod(path, 0o755);
}

async function writeConfig(config: unknown) {
  await writeFile(join(dir, 'config.json'), JSON.stringify(config));
}

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'packfarm-creds-'));
  binDir = join(dir, 'bin');
  await mkdir(binDir);
  // Every credential file under the temp dir: never the machine's own logins.
  env = {
    DOCKER_CONFIG: dir,
    PATH: `${binDir}:${process.env.PATH}`,
    HOME: dir,
    XDG_RUNTIME_DIR: join(dir, 'run'),
  };
});
afterEach(async () => {
  await rm(dir, { recursive: true, force: true });
});

describe('docker config location', () => {
  it('uses $DOCKER_CONFIG, else ~/.docker', () => {
    expect(dockerConfigPath({ DOCKER_CONFIG: '/x' })).toBe('/x/config.json');
    expect(dockerConfigPath({ HOME: '/home/u' })).toBe('/home/u/.docker/config.json');
  });
});

describe('normalizeRegistryKey', () => {
  it.each([
    ['https://index.docker.io/v1/', 'docker.io'],
    ['index.docker.io', 'docker.io'],
    ['registry-1.docker.io', 'docker.io'],
    ['docker.io', 'docker.io'],
    ['https://Registry.Example:5000/v2/', 'registry.example:5000'],
    ['http://127.0.0.1:5000', '127.0.0.1:5000'],
    ['[::1]:5000', '[::1]:5000'],
  ])('%s → %s', (key, want) => {
    expect(normalizeRegistryKey(key)).toBe(want);
  });
});

describe('resolveCredential', () => {
  it('reads auths: base64 auth, username/password, identitytoken, registrytoken; keys normalized', async () => {
    await writeConfig({
      auths: {
        'https://registry.example:5000/v1/': { auth: b64('alice:pa:ss') },
        'plain.example': { username: 'bob', password: 'pw' },
        'idt.example': { identitytoken: 'refresh-me' },
        'rt.example': { registrytoken: 'bearer-me' },
        'https://index.docker.io/v1/': { auth: b64('hubuser:hubpass') },
        'empty.example': {},
      },
    });
    expect(bare(await resolveCredential('registry.example:5000', { env }))).toEqual({
      username: 'alice',
      password: 'pa:ss',
    });
    expect(bare(await resolveCredential('plain.example', { env }))).toEqual({
      username: 'bob',
      password: 'pw',
    });
    expect(bare(await resolveCredential('idt.example', { env }))).toEqual({ identityToken: 'refresh-me' });
    expect(bare(await resolveCredential('rt.example', { env }))).toEqual({ registryToken: 'bearer-me' });
    expect(bare(await resolveCredential('docker.io', { env }))).toEqual({
      username: 'hubuser',
      password: 'hubpass',
    });
    expect(await resolveCredential('empty.example', { env })).toBeUndefined();
    expect(await resolveCredential('unknown.example', { env })).toBeUndefined();
  });

  it('is anonymous without a config file', async () => {
    expect(
      await resolveCredential('registry.example', {
        env: { DOCKER_CONFIG: join(dir, 'nope'), HOME: dir, XDG_RUNTIME_DIR: join(dir, 'run') },
      }),
    ).toBeUndefined();
  });

  it('names the file and entry when an auth value is broken', async () => {
    await writeConfig({ auths: { 'bad.example': { auth: b64('no-colon-here') } } });
    await expect(resolveCredential('bad.example', { env })).rejects.toThrow(
      /config\.json auths\["bad\.example"\]/,
    );
    await writeConfig({ auths: { 'bad.example': { auth: 7 } } });
    await expect(resolveCredential('bad.example', { env })).rejects.toMatchObject({
      code: 'CREDENTIALS_INVALID',
    });
  });

  it('asks credHelpers per registry, then credsStore; "credentials not found" means none', async () => {
    await writeHelper('percred', { 'helped.example': { user: 'carol', secret: 'from-helper' } });
    await writeHelper('store', {
      'https://index.docker.io/v1/': { user: '<token>', secret: 'hub-identity' },
      'stored.example': { user: 'dave', secret: 'from-store' },
    });
    await writeConfig({
      credHelpers: { 'helped.example': 'percred' },
      credsStore: 'store',
      auths: { 'inline.example': { auth: b64('erin:inline') } },
    });
    expect(bare(await resolveCredential('helped.example', { env }))).toEqual({
      username: 'carol',
      password: 'from-helper',
    });
    expect(bare(await resolveCredential('stored.example', { env }))).toEqual({
      username: 'dave',
      password: 'from-store',
    });
    // An identity token comes back as Username "<token>"; Docker Hub is asked for under its v1 URL.
    expect(bare(await resolveCredential('docker.io', { env }))).toEqual({ identityToken: 'hub-identity' });
    // An auths entry with a credential is used before the default store.
    expect(bare(await resolveCredential('inline.example', { env }))).toEqual({
      username: 'erin',
      password: 'inline',
    });
    expect(await resolveCredential('nothing.example', { env })).toBeUndefined();
    expect((await readFile(join(dir, 'store.log'), 'utf8')).split('\n')).toEqual([
      'stored.example',
      'https://index.docker.io/v1/',
      'nothing.example',
      '',
    ]);
  });

  it('reports a failing or missing helper clearly', async () => {
    await writeHelper('store', {});
    await expect(runCredentialHelper('store', 'broken.example', { env })).rejects.toThrow(
      /docker-credential-store failed for broken\.example \(exit 3\): keychain locked/,
    );
    await writeConfig({ credsStore: 'absent' });
    await expect(resolveCredential('x.example', { env })).rejects.toMatchObject({
      code: 'CREDENTIAL_HELPER_FAILED',
      hint: expect.stringContaining('docker-credential-absent'),
    });
  });

  it('lets CNB_REGISTRY_AUTH win over the docker config', async () => {
    await writeConfig({ auths: { 'registry.example': { auth: b64('cfg:cfg') } } });
    const withEnv = {
      ...env,
      CNB_REGISTRY_AUTH: JSON.stringify({
        'registry.example': `Basic ${b64('envuser:envpass')}`,
        'https://tok.example/': 'Bearer abc.def',
      }),
    };
    expect(bare(await resolveCredential('registry.example', { env: withEnv }))).toEqual({
      username: 'envuser',
      password: 'envpass',
    });
    expect(bare(await resolveCredential('tok.example', { env: withEnv }))).toEqual({
      registryToken: 'abc.def',
    });
  });

  it('reads containers-auth.json files as podman does, before the docker config, naming the source', async () => {
    await writeConfig({
      auths: { 'both.example': { auth: b64('docker:d') }, 'dk.example': { auth: b64('dk:d') } },
    });
    const runFile = join(dir, 'run', 'containers', 'auth.json');
    const cfgFile = join(dir, '.config', 'containers', 'auth.json');
    expect(containersAuthPaths(env)).toEqual([runFile, cfgFile]);
    await mkdir(join(dir, 'run', 'containers'), { recursive: true });
    await mkdir(join(dir, '.config', 'containers'), { recursive: true });
    await writeFile(
      runFile,
      JSON.stringify({
        auths: { 'both.example': { auth: b64('podman:p') }, 'ns.example/team': { auth: b64('ns:n') } },
      }),
    );
    await writeFile(cfgFile, JSON.stringify({ auths: { 'cfg.example:5000': { auth: b64('cfg:c') } } }));
    expect(await resolveCredential('both.example', { env })).toEqual({
      username: 'podman',
      password: 'p',
      source: `${runFile} auths["both.example"]`,
    });
    expect(bare(await resolveCredential('cfg.example:5000', { env }))).toEqual({
      username: 'cfg',
      password: 'c',
    });
    expect(bare(await resolveCredential('dk.example', { env }))).toEqual({ username: 'dk', password: 'd' });
    // A namespace key is not a credential for the whole registry.
    expect(await resolveCredential('ns.example', { env })).toBeUndefined();
    // REGISTRY_AUTH_FILE replaces the primary file; XDG_CONFIG_HOME moves the second one.
    const authFile = join(dir, 'mine.json');
    await writeFile(authFile, JSON.stringify({ auths: { 'both.example': { auth: b64('mine:m') } } }));
    const env2 = { ...env, REGISTRY_AUTH_FILE: authFile, XDG_CONFIG_HOME: join(dir, 'xdg') };
    expect(primaryAuthFile(env2)).toBe(authFile);
    expect(containersAuthPaths(env2)).toEqual([authFile, join(dir, 'xdg', 'containers', 'auth.json')]);
    expect(bare(await resolveCredential('both.example', { env: env2 }))).toEqual({
      username: 'mine',
      password: 'm',
    });
    expect(primaryAuthFile({ HOME: dir })).toMatch(/^\/run\/containers\/\d+\/auth\.json$/);
  });

  it('rejects malformed CNB_REGISTRY_AUTH naming the entry', () => {
    expect(() => parseCnbRegistryAuth('{"r.example":"Digest xyz"}')).toThrow(
      /CNB_REGISTRY_AUTH "r\.example"/,
    );
    expect(() => parseCnbRegistryAuth('not json')).toThrow(/CNB_REGISTRY_AUTH: not valid JSON/);
    expect(() => parseCnbRegistryAuth('{"r":1}')).toThrow(/CNB_REGISTRY_AUTH/);
  });

  it('asks a helper once per registry through the keychain', async () => {
    await writeHelper('store', { 'stored.example': { user: 'dave', secret: 's' } });
    await writeConfig({ credsStore: 'store' });
    const keychain = createKeychain({ env });
    await Promise.all([
      keychain('stored.example'),
      keychain('stored.example'),
      keychain('https://stored.example'),
    ]);
    expect((await readFile(join(dir, 'store.log'), 'utf8')).trim().split('\n')).toHaveLength(1);
  });
});
