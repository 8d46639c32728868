import { chmod, cp, mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  SHIPPED_ROOT,
  defaultBuilder,
  defaultBuilderLocation,
  localCaCertificates,
} from './default-builder.js';

/**
 * The default builder's cache key and its reuse, on copies of builders/default and buildpacks/ in a temp dir
 * (no image is made here; test/integration/default-builder.test.ts makes and uses the real one).
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
    expect(a.reference).toBe(`oci:${join(root, 'home', 'default-builder', a.hash, 'builder')}:latest`);
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

  it('a builder with its ready marker is used as it is, without making anything', async () => {
    const loc = await defaultBuilderLocation({ env: env(), definitionsDir: defs });
    await mkdir(loc.home, { recursive: true });
    await writeFile(join(loc.home, 'ready'), 'sha256:…\n');
    const progress: string[] = [];
    const used = await defaultBuilder({
      env: env(),
      definitionsDir: defs,
      onProgress: (m) => progress.push(m),
    });
    expect(used).toEqual({ reference: loc.reference, created: false, hash: loc.hash });
    expect(progress).toEqual([]);
  });

  it('names a missing definition and a buildpack uri that is not a directory', async () => {
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
