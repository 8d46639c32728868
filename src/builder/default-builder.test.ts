import { chmod, cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { hostname, tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { writeTestImage } from '../../test/helpers/images.js';
import { openLayoutStore } from '../image/layout-store.js';
import { type Platform, formatPlatform, parsePlatform } from '../oci/platform.js';
import {
  SHIPPED_ROOT,
  defaultBuilder,
  defaultBuilderLocation,
  localCaCertificates,
  platformSlug,
} from './default-builder.js';

/**
 * The default builder's cache key, its per-platform reuse and its lock, on copies of builders/default and
 * buildpacks/ in a temp dir (no base or builder image is made here: test/integration/default-builder-lock.test.ts
 * makes a small one from two racing processes, test/integration/default-builder.test.ts the real one).
 */
let root: string;
let defs: string;
const env = () => ({ PACKFARM_HOME: join(root, 'home') });

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-default-builder-unit-'));
  await cp(join(SHIPPED_ROOT, 'builders', 'default'), join(root, 'builders', 'default'), { recursive: true });
  await cp(join(SHIPPED_ROOT, 'buildpacks'), join(root, 'buildpacks'), { recursive: true });
  defs = join(root, 'builders', 'default');
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('default builder location', () => {
  it('is keyed by the definitions and every buildpack file, bytes and executable bit', async () => {
    const a = await defaultBuilderLocation({ env: env(), definitionsDir: defs });
    expect(a.home).toBe(join(root, 'home', 'default-builder', a.hash));
    expect(a.builderLayout).toBe(join(a.home, 'builder'));
    expect(a.targets.map(formatPlatform)).toEqual([
      'linux/amd64',
      'linux/arm64',
      'linux/ppc64le',
      'linux/s390x',
    ]);
    expect((await defaultBuilderLocation({ env: env(), definitionsDir: defs })).hash).toBe(a.hash);
    // The shipped definition names the shipped buildpacks, and this copy names the copies.
    expect(a.buildpackDirs).toEqual(
      ['nodejs', 'shell-script', 'procfile'].map((n) => join(root, 'buildpacks', n)),
    );

    const script = join(root, 'buildpacks', 'shell-script', 'bin', 'build');
    await chmod(script, 0o644);
    const b = await defaultBuilderLocation({ env: env(), definitionsDir: defs });
    expect(b.hash).not.toBe(a.hash);
    await chmod(script, 0o755);
    expect((await defaultBuilderLocation({ env: env(), definitionsDir: defs })).hash).toBe(a.hash);

    await writeFile(join(root, 'buildpacks', 'nodejs', 'NOTES'), 'a new file\n');
    expect((await defaultBuilderLocation({ env: env(), definitionsDir: defs })).hash).not.toBe(a.hash);
    await rm(join(root, 'buildpacks', 'nodejs', 'NOTES'));
  });

  it('names a missing definition, a buildpack uri that is not a directory and a builder without targets', async () => {
    await expect(
      defaultBuilderLocation({ env: env(), definitionsDir: join(root, 'none') }),
    ).rejects.toMatchObject({
      code: 'BUILDER_NOT_FOUND',
    });
    const bad = join(root, 'bad');
    await mkdir(bad);
    await writeFile(join(bad, 'base.toml'), '');
    await writeFile(join(bad, 'builder.toml'), '[[buildpacks]]\nuri = "docker://x/y"\n');
    await expect(defaultBuilderLocation({ env: env(), definitionsDir: bad })).rejects.toMatchObject({
      code: 'INVALID_BUILDER_TOML',
      message: expect.stringContaining('builder.toml: buildpacks[0].uri'),
    });
    await writeFile(join(bad, 'builder.toml'), '[[buildpacks]]\nuri = "../x"\n');
    await expect(defaultBuilderLocation({ env: env(), definitionsDir: bad })).rejects.toMatchObject({
      code: 'INVALID_BUILDER_TOML',
      message: expect.stringContaining('builder.toml: targets: the default builder names no platform'),
    });
  });
});

describe('default builder per platform', () => {
  const amd64 = parsePlatform('linux/amd64');
  const arm64 = parsePlatform('linux/arm64');

  /** Stand-ins for made platforms: an image tagged with the platform in the builder layout, and its marker. */
  async function pretendMade(...platforms: Platform[]) {
    const loc = await defaultBuilderLocation({ env: env(), definitionsDir: defs });
    const store = await openLayoutStore(loc.builderLayout, { create: true });
    const images = [];
    for (const p of platforms) {
      images.push(await writeTestImage(store, { platform: p, tag: platformSlug(p) }));
      await writeFile(join(loc.home, `ready-${platformSlug(p)}`), 'sha256:…\n');
    }
    return { loc, store, images };
  }

  it('uses made platforms as they are; a set gets an index over exactly those platforms', async () => {
    const { loc, store, images } = await pretendMade(amd64, arm64);
    const progress: string[] = [];
    const one = await defaultBuilder({
      env: env(),
      definitionsDir: defs,
      platforms: [arm64],
      onProgress: (m) => progress.push(m),
    });
    expect(one).toEqual({
      reference: `oci:${loc.builderLayout}:linux-arm64`,
      platforms: [arm64],
      created: false,
      made: [],
      hash: loc.hash,
    });
    // Asked in any order (and as arm64/v8): builder.toml's order, one index tagged by the set.
    const two = await defaultBuilder({
      env: env(),
      definitionsDir: defs,
      platforms: [parsePlatform('linux/arm64/v8'), amd64],
      onProgress: (m) => progress.push(m),
    });
    expect(two.reference).toBe(`oci:${loc.builderLayout}:linux-amd64_linux-arm64`);
    expect(two.platforms.map(formatPlatform)).toEqual(['linux/amd64', 'linux/arm64']);
    expect(two.created).toBe(false);
    expect(progress).toEqual([]);
    const index = JSON.parse((await store.getManifest('linux-amd64_linux-arm64')).bytes.toString('utf8'));
    expect(index.manifests.map((m: { digest: string; platform: unknown }) => [m.digest, m.platform])).toEqual(
      [
        [images[0]!.digest, { os: 'linux', architecture: 'amd64' }],
        [images[1]!.digest, { os: 'linux', architecture: 'arm64' }],
      ],
    );
    // The same set again writes nothing new.
    const before = await readFile(join(loc.builderLayout, 'index.json'), 'utf8');
    await defaultBuilder({ env: env(), definitionsDir: defs, platforms: [amd64, arm64] });
    expect(await readFile(join(loc.builderLayout, 'index.json'), 'utf8')).toBe(before);
  });

  it('refuses a platform that is not a target, naming the targets', async () => {
    await expect(
      defaultBuilder({
        env: env(),
        definitionsDir: defs,
        platforms: [amd64, parsePlatform('linux/riscv64')],
      }),
    ).rejects.toMatchObject({
      code: 'NO_MATCHING_PLATFORM',
      message: expect.stringContaining(
        'has no linux/riscv64: its targets are linux/amd64, linux/arm64, linux/ppc64le, linux/s390x',
      ),
    });
  });

  it('refuses a target that base.toml has no architecture for, before downloading anything', async () => {
    const only = join(root, 'builders', 'amd64-base');
    await cp(defs, only, { recursive: true });
    const baseToml = join(only, 'base.toml');
    await writeFile(
      baseToml,
      (await readFile(baseToml, 'utf8')).replace(/^architectures = .*$/m, 'architectures = ["amd64"]'),
    );
    await expect(
      defaultBuilder({ env: env(), definitionsDir: only, platforms: [parsePlatform('linux/s390x')] }),
    ).rejects.toMatchObject({
      code: 'INVALID_BASE_DEFINITION',
      message: expect.stringContaining('base.toml: architectures: linux/s390x is a target of'),
    });
  });

  it('waits for a live holder of the platform lock, saying so, and gives up after waitTimeoutMs', async () => {
    const loc = await defaultBuilderLocation({ env: env(), definitionsDir: defs });
    await mkdir(loc.home, { recursive: true });
    const lock = join(loc.home, 'linux-ppc64le.lock');
    // This test process is alive: another owner token with our pid is a live holder.
    await writeFile(lock, JSON.stringify({ pid: process.pid, host: hostname(), token: 'someone' }));
    const progress: string[] = [];
    await expect(
      defaultBuilder({
        env: env(),
        definitionsDir: defs,
        platforms: [parsePlatform('linux/ppc64le')],
        waitTimeoutMs: 300,
        onProgress: (m) => progress.push(m),
      }),
    ).rejects.toMatchObject({
      code: 'LOCK_TIMEOUT',
      message: expect.stringContaining(
        `pid ${process.pid} on ${hostname()} is still making the default builder for linux/ppc64le`,
      ),
    });
    expect(progress[0]).toBe(
      `waiting for pid ${process.pid} on ${hostname()} to finish making the default builder for linux/ppc64le (0 s so far, up to 0 s)`,
    );
    // Made meanwhile by the holder: a waiter that gets the lock uses it.
    await pretendMade(parsePlatform('linux/ppc64le'));
    await rm(join(loc.home, 'ready-linux-ppc64le'));
    const done = defaultBuilder({
      env: env(),
      definitionsDir: defs,
      platforms: [parsePlatform('linux/ppc64le')],
      onProgress: (m) => progress.push(m),
    });
    await new Promise((r) => setTimeout(r, 200));
    await writeFile(join(loc.home, 'ready-linux-ppc64le'), 'sha256:…\n');
    await rm(lock);
    expect((await done).created).toBe(false);
    expect(progress.at(-1)).toBe(
      'default builder for linux/ppc64le: made by another packfarm process, using it',
    );
  });
});

describe('localCaCertificates', () => {
  it('concatenates the PEM .crt files of a directory in name order, and is undefined without any', async () => {
    const dir = join(root, 'cas');
    await mkdir(dir);
    expect(await localCaCertificates(dir)).toBeUndefined();
    const pem = (n: string) => `-----BEGIN CERTIFICATE-----\n${n}\n-----END CERTIFICATE-----\n`;
    await writeFile(join(dir, 'b.crt'), pem('B'));
    await writeFile(join(dir, 'a.crt'), pem('A'));
    await writeFile(join(dir, 'c.txt'), pem('C'));
    await writeFile(join(dir, 'd.crt'), 'not a certificate');
    expect(await localCaCertificates(dir)).toBe(`${pem('A')}${pem('B')}`);
  });
});
