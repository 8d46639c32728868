import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeTestImage } from '../../test/helpers/images.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { openLayoutStore } from './layout-store.js';
import {
  aboutImage,
  dockerHubNote,
  localRegistryDirName,
  displayImageLocation,
  formatImageLocation,
  ifImageExists,
  insecureRegistriesFrom,
  openImage,
  parseImageLocation,
} from './transport.js';
import type { ErrorCode } from '../util/error-codes.js';

const D = `sha256:${'c'.repeat(64)}`;

describe('parseImageLocation', () => {
  it.each([
    ['oci:/tmp/x', { transport: 'oci', dir: '/tmp/x' }],
    ['oci:/tmp/x:v1', { transport: 'oci', dir: '/tmp/x', tag: 'v1' }],
    ['oci:/tmp/a:b:latest', { transport: 'oci', dir: '/tmp/a:b', tag: 'latest' }],
    ['oci:/tmp/a:b/c', { transport: 'oci', dir: '/tmp/a:b/c' }],
    [`oci:/tmp/x@${D}`, { transport: 'oci', dir: '/tmp/x', digest: D }],
    ['oci:rel/dir:t', { transport: 'oci', dir: resolve('rel/dir'), tag: 't' }],
  ])('%s', (text, want) => {
    expect(parseImageLocation(text)).toEqual(want);
  });

  it('reads registry references with and without docker://', () => {
    expect(parseImageLocation('docker://ubuntu')).toEqual({
      transport: 'docker',
      reference: { registry: 'docker.io', repository: 'library/ubuntu', tag: 'latest' },
    });
    const loc = parseImageLocation(`127.0.0.1:5000/team/app@${D}`);
    expect(loc).toEqual({
      transport: 'docker',
      reference: { registry: '127.0.0.1:5000', repository: 'team/app', digest: D },
    });
    expect(formatImageLocation(loc)).toBe(`docker://127.0.0.1:5000/team/app@${D}`);
    expect(displayImageLocation(parseImageLocation('docker://ubuntu:22.04'))).toBe('ubuntu:22.04');
  });

  it.each([
    ['oci:', 'INVALID_LOCATION'],
    ['oci:/x:', 'INVALID_LOCATION'],
    ['oci:/x:bad tag', 'INVALID_LOCATION'],
    ['dir:/x', 'UNSUPPORTED_TRANSPORT'],
    ['docker://UPPER/x', 'INVALID_REFERENCE'],
  ])('rejects %j', (text, code) => {
    try {
      parseImageLocation(text, 'SRC');
      expect.unreachable();
    } catch (err) {
      expect(isPackfarmError(err, code as ErrorCode)).toBe(true);
      expect((err as Error).message).toContain('SRC');
    }
  });
});

describe('insecureRegistriesFrom', () => {
  it('merges flags and CNB_INSECURE_REGISTRIES without duplicates', () => {
    expect(insecureRegistriesFrom(['a:5000'], { CNB_INSECURE_REGISTRIES: 'b, c a:5000' })).toEqual([
      'a:5000',
      'b',
      'c',
    ]);
    expect(insecureRegistriesFrom([], {})).toEqual([]);
  });
});

describe('openImage on layouts', () => {
  let tmp: string;
  beforeEach(async () => {
    tmp = await mkdtemp(join(tmpdir(), 'packfarm-transport-'));
  });
  afterEach(async () => {
    await rm(tmp, { recursive: true, force: true });
  });

  it('defaults a source to latest, or to the only image; a destination to latest', async () => {
    const dir = join(tmp, 'l');
    const store = await openLayoutStore(dir, { create: true });
    const img = await writeTestImage(store, { tag: 'only' });
    expect((await openImage(`oci:${dir}`)).target).toBe(img.digest);
    await writeTestImage(store, { tag: 'latest', platform: 'linux/arm64' });
    expect((await openImage(`oci:${dir}`)).target).toBe('latest');
    const dst = await openImage(`oci:${join(tmp, 'new')}`, { create: true });
    expect(dst.target).toBe('latest');
    expect(dst.tag).toBe('latest');
    const byDigest = await openImage(`oci:${dir}@${img.digest}`);
    expect(byDigest.target).toBe(img.digest);
    expect(byDigest.tag).toBeUndefined();
  });

  it('refuses a missing source layout', async () => {
    const err = await openImage(`oci:${join(tmp, 'absent')}:x`).catch((e: unknown) => e);
    expect(isPackfarmError(err, 'LAYOUT_NOT_FOUND')).toBe(true);
  });

  it('takes only a missing layout as "no previous image"; a mistyped name is still an error', async () => {
    expect(await ifImageExists(openImage(`oci:${join(tmp, 'absent')}:x`))).toBeUndefined();
    const err = await ifImageExists(openImage('oci:')).catch((e: unknown) => e);
    expect(isPackfarmError(err, 'INVALID_LOCATION')).toBe(true);
    const bad = await ifImageExists(openImage('ftp://example/app')).catch((e: unknown) => e);
    expect(isPackfarmError(bad)).toBe(true);
  });
});

describe('naming images in errors', () => {
  it('says when a name was read as Docker Hub, and only then', () => {
    expect(dockerHubNote('localhost5077/app')).toBe(
      '"localhost5077/app" was read as docker.io/localhost5077/app:latest (Docker Hub): a first part without "." or ":" (other than localhost) is not a registry host',
    );
    expect(dockerHubNote('ubuntu')).toContain('docker.io/library/ubuntu:latest');
    for (const t of [
      'localhost:5077/app',
      'localhost/app',
      'reg.example/app',
      'docker.io/library/x',
      'oci:/x:y',
    ])
      expect(dockerHubNote(t), t).toBeUndefined();
  });

  it('puts the image in front of an error once, keeping code, hint and exit code', () => {
    const inner = new PackfarmError(
      'MANIFEST_UNKNOWN',
      'GET https://r/v2/run/manifests/v9 failed: HTTP 404',
      {
        hint: 'check the tag',
        exitCode: 3,
      },
    );
    const once = aboutImage(inner, 'run image', 'r.example/run:v9') as PackfarmError;
    expect(once.message).toBe(
      'run image r.example/run:v9: GET https://r/v2/run/manifests/v9 failed: HTTP 404',
    );
    expect([once.code, once.hint, once.exitCode]).toEqual(['MANIFEST_UNKNOWN', 'check the tag', 3]);
    expect(aboutImage(once, 'IMAGE', 'other')).toBe(once);
    const plain = new Error('not ours');
    expect(aboutImage(plain, 'run image', 'x')).toBe(plain);
  });

  it('names local layout dirs without ":" (podman and skopeo split oci:DIR:TAG at the first ":")', () => {
    expect(localRegistryDirName('localhost:5000')).toBe('localhost_5000');
    expect(localRegistryDirName('[::1]:5000')).toBe('[__1]_5000');
    expect(localRegistryDirName('docker.io')).toBe('docker.io');
  });
});
