import { describe, expect, it } from 'vitest';
import {
  comparePlatforms,
  compatiblePlatforms,
  formatPlatform,
  normalizePlatform,
  parsePlatform,
  platformCompatible,
  platformsEqual,
} from './platform.js';

describe('platforms', () => {
  it.each([
    ['linux/amd64', 'linux/amd64'],
    ['linux/x86_64', 'linux/amd64'],
    ['linux/aarch64', 'linux/arm64'],
    ['linux/arm64/v8', 'linux/arm64'],
    ['linux/armhf', 'linux/arm/v7'],
    ['linux/armel', 'linux/arm/v6'],
    ['linux/arm', 'linux/arm/v7'],
    ['linux/arm/7', 'linux/arm/v7'],
    ['linux/i386', 'linux/386'],
    ['linux/ppc64el', 'linux/ppc64le'],
    ['Linux/AMD64', 'linux/amd64'],
    ['arm64', 'linux/arm64'],
    ['linux/s390x', 'linux/s390x'],
  ])('normalizes %s → %s', (input, want) => {
    expect(formatPlatform(parsePlatform(input))).toBe(want);
  });

  it.each(['', 'linux/', 'a/b/c/d', 'linux/amd 64'])('rejects %j', (input) => {
    expect(() => parsePlatform(input, '--platform')).toThrowError(/--platform/);
  });

  it('matches strictly after normalizing both sides', () => {
    expect(platformsEqual(parsePlatform('linux/arm64/v8'), { os: 'linux', architecture: 'aarch64' })).toBe(
      true,
    );
    expect(platformsEqual(parsePlatform('linux/arm/v7'), parsePlatform('linux/arm/v6'))).toBe(false);
    expect(platformsEqual(parsePlatform('linux/amd64'), parsePlatform('linux/arm64'))).toBe(false);
  });

  it('knows what a host can run compatibly', () => {
    const amd64 = parsePlatform('linux/amd64');
    const arm64 = parsePlatform('linux/arm64');
    const armv7 = parsePlatform('linux/arm/v7');
    expect(platformCompatible(amd64, parsePlatform('linux/386'))).toBe(true);
    expect(platformCompatible(amd64, arm64)).toBe(false);
    for (const v of ['v8', 'v7', 'v6', 'v5'])
      expect(platformCompatible(arm64, parsePlatform(`linux/arm/${v}`))).toBe(true);
    expect(platformCompatible(armv7, parsePlatform('linux/arm/v6'))).toBe(true);
    expect(platformCompatible(armv7, parsePlatform('linux/arm/v5'))).toBe(true);
    expect(platformCompatible(parsePlatform('linux/arm/v6'), armv7)).toBe(false);
    expect(platformCompatible(armv7, arm64)).toBe(false);
    expect(compatiblePlatforms(arm64).map(formatPlatform)[0]).toBe('linux/arm64');
  });

  it('orders platforms deterministically', () => {
    const list = ['linux/s390x', 'linux/arm64', 'linux/amd64', 'linux/arm/v7', 'linux/arm/v6'].map((p) =>
      parsePlatform(p),
    );
    expect(list.sort(comparePlatforms).map(formatPlatform)).toEqual([
      'linux/amd64',
      'linux/arm/v6',
      'linux/arm/v7',
      'linux/arm64',
      'linux/s390x',
    ]);
  });

  it('keeps os.version', () => {
    expect(
      normalizePlatform({ os: 'windows', architecture: 'amd64', osVersion: '10.0.17763.1' }).osVersion,
    ).toBe('10.0.17763.1');
  });
});
