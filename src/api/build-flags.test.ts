import { describe, expect, it } from 'vitest';
import { parseCacheSpec, parseNetwork, parseVolume } from './build-flags.js';

describe("pack's build flags", () => {
  it('reads --cache specs: image, bind, named volume; refuses launch caches and unknown keys', () => {
    expect(parseCacheSpec('type=build;format=image;name=reg.example/app-cache', '/d')).toEqual({
      cacheImage: 'reg.example/app-cache',
    });
    expect(parseCacheSpec('type=build;format=bind;source=cache', '/d', '/work')).toEqual({
      cacheDir: '/work/cache',
    });
    expect(parseCacheSpec('format=volume;name=my-cache', '/d')).toEqual({
      cacheDir: '/d/cache/volume-my-cache',
    });
    expect(parseCacheSpec('type=build', '/d')).toEqual({ cacheDir: '/d/cache/volume-default' });
    expect(() => parseCacheSpec('type=launch;format=volume', '/d')).toThrow(/type=launch is not supported/);
    expect(() => parseCacheSpec('format=image', '/d')).toThrow(/format=image needs name=REF/);
    expect(() => parseCacheSpec('format=volume;name=../x', '/d')).toThrow(/volume name/);
    expect(() => parseCacheSpec('colour=blue', '/d')).toThrow(/--cache "colour=blue": unknown key "colour"/);
    expect(() => parseCacheSpec('format=image;format=bind', '/d')).toThrow(/given twice/);
  });

  it('reads --volume HOST:TARGET[:ro|rw], read-only by default, never over the lifecycle dirs', () => {
    expect(parseVolume('/srv/certs:/etc/certs', '/w')).toEqual({
      host: '/srv/certs',
      target: '/etc/certs',
      readOnly: true,
    });
    expect(parseVolume('data:/data/:rw', '/w')).toEqual({
      host: '/w/data',
      target: '/data',
      readOnly: false,
    });
    expect(() => parseVolume('a:relative', '/w')).toThrow(/must be an absolute path/);
    expect(() => parseVolume('a:/layers/x', '/w')).toThrow(/not allowed: the lifecycle owns \/layers/);
    expect(() => parseVolume('a:/cnb', '/w')).toThrow(/not allowed/);
    expect(() => parseVolume('a:/', '/w')).toThrow(/not allowed/);
    expect(() => parseVolume('a:/x:rx', '/w')).toThrow(/mode must be ro or rw/);
    expect(() => parseVolume('nocolon', '/w')).toThrow(/expected HOST:TARGET/);
  });

  it('takes --network host or none only', () => {
    expect(parseNetwork('host')).toBe('host');
    expect(parseNetwork('none')).toBe('none');
    expect(() => parseNetwork('bridge')).toThrow(/--network "bridge": packfarm has no named networks/);
  });
});
