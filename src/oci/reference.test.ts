import { describe, expect, it } from 'vitest';
import { familiarReference, formatReference, parseReference, registryApiHost } from './reference.js';

const D = `sha256:${'a'.repeat(64)}`;

describe('parseReference', () => {
  it.each([
    ['ubuntu', 'docker.io/library/ubuntu:latest'],
    ['ubuntu:22.04', 'docker.io/library/ubuntu:22.04'],
    ['team/app', 'docker.io/team/app:latest'],
    ['docker.io/ubuntu', 'docker.io/library/ubuntu:latest'],
    ['index.docker.io/library/ubuntu:1', 'docker.io/library/ubuntu:1'],
    ['localhost/app', 'localhost/app:latest'],
    ['localhost:5000/app:v1', 'localhost:5000/app:v1'],
    ['127.0.0.1:5000/a/b/c:tag', '127.0.0.1:5000/a/b/c:tag'],
    ['registry.example/app', 'registry.example/app:latest'],
    ['[::1]:5000/app:1', '[::1]:5000/app:1'],
    [`registry.example/app@${D}`, `registry.example/app@${D}`],
    [`registry.example/app:1.0@${D}`, `registry.example/app:1.0@${D}`],
    ['my-registry.io:443/ns/app_x__y.z-w:TAG_1.2-3', 'my-registry.io:443/ns/app_x__y.z-w:TAG_1.2-3'],
  ])('%s → %s', (input, want) => {
    expect(formatReference(parseReference(input))).toBe(want);
  });

  it('splits registry, repository, tag and digest', () => {
    expect(parseReference(`h:1/a/b:t@${D}`)).toEqual({
      registry: 'h:1',
      repository: 'a/b',
      tag: 't',
      digest: D,
    });
  });

  it('treats a first component without . or : as a path, not a host', () => {
    expect(parseReference('foo/bar').registry).toBe('docker.io');
  });

  it('can leave the tag unset', () => {
    expect(parseReference('app', { defaultTag: false }).tag).toBeUndefined();
  });

  it.each([
    ['', 'empty'],
    ['UPPER/app', 'lower-case'],
    ['app:bad tag', 'not a valid tag'],
    ['app@sha256:123', 'not a sha256 digest'],
    ['registry.example//app', 'empty'],
    ['app:', 'not a valid tag'],
    ['-bad/app', 'lower-case'],
    ['host:port:x/app', 'registry host'],
  ])('rejects %j with a clear error', (input, why) => {
    expect(() => parseReference(input, { source: '--tag' })).toThrowError(why);
    try {
      parseReference(input, { source: '--tag' });
    } catch (err) {
      expect((err as { code: string }).code).toBe('INVALID_REFERENCE');
      expect((err as Error).message).toContain('--tag');
    }
  });

  it('prints the familiar form', () => {
    expect(familiarReference(parseReference('ubuntu'))).toBe('ubuntu:latest');
    expect(familiarReference(parseReference('localhost:5000/x'))).toBe('localhost:5000/x:latest');
  });

  it('maps Docker Hub to its API host', () => {
    expect(registryApiHost('docker.io')).toBe('registry-1.docker.io');
    expect(registryApiHost('127.0.0.1:5000')).toBe('127.0.0.1:5000');
  });
});
