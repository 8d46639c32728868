import { describe, expect, it } from 'vitest';
import { formatPlatform, type Platform } from '../oci/platform.js';
import { isPackfarmError } from '../util/errors.js';
import { defaultBuilderTargets, defaultTargets, howRunnable, parsePlatformList } from './targets.js';

const p = (s: string): Platform => {
  const [os, architecture, variant] = s.split('/') as [string, string, string | undefined];
  return { os, architecture, ...(variant ? { variant } : {}) };
};
const names = (ps: Platform[]) => ps.map(formatPlatform);
const machine = {
  native: [p('linux/amd64'), p('linux/386')],
  emulated: [p('linux/arm64'), p('linux/arm/v7')],
};

describe('parsePlatformList', () => {
  it('splits commas, takes repeats, normalizes and drops duplicates in order', () => {
    expect(names(parsePlatformList(['linux/x86_64,linux/arm64/v8', 'linux/aarch64', 'linux/arm']))).toEqual([
      'linux/amd64',
      'linux/arm64',
      'linux/arm/v7',
    ]);
  });
  it('names the flag and the bad entry', () => {
    for (const bad of ['linux/amd64,', 'linux/amd64,,linux/arm64', 'linux/amd64/v2/x']) {
      try {
        parsePlatformList([bad]);
        expect.unreachable();
      } catch (err) {
        expect(isPackfarmError(err, 'INVALID_PLATFORM')).toBe(true);
        expect((err as Error).message).toMatch(/^--platform: /);
      }
    }
  });
});

describe('howRunnable', () => {
  it('native, emulated (an arm/v7 emulator also runs v6), or not at all', () => {
    expect(howRunnable(machine, p('linux/386'))).toBe('native');
    expect(howRunnable(machine, p('linux/arm64/v8'))).toBe('emulated');
    expect(howRunnable(machine, p('linux/arm/v6'))).toBe('emulated');
    expect(howRunnable(machine, p('linux/s390x'))).toBeUndefined();
  });
});

describe('defaultTargets', () => {
  it("keeps the builder's platforms this machine can build, and says why it left the others out", () => {
    const offered = [p('linux/amd64'), p('linux/arm64'), p('linux/s390x')];
    const oci = defaultTargets({ offered, machine, canEmulate: true });
    expect(names(oci.targets)).toEqual(['linux/amd64', 'linux/arm64']);
    expect(oci.leftOut.map((l) => formatPlatform(l.platform))).toEqual(['linux/s390x']);
    expect(oci.leftOut[0]?.reason).toMatch(/cannot run it .*native linux\/amd64, linux\/386; emulated/);
    const host = defaultTargets({ offered, machine, canEmulate: false });
    expect(names(host.targets)).toEqual(['linux/amd64']);
    expect(host.leftOut[0]?.reason).toMatch(/need a build image and the oci executor/);
  });
  it('without offered platforms: this machine’s own', () => {
    expect(
      names(defaultTargets({ offered: [], machine, canEmulate: true, host: p('linux/amd64') }).targets),
    ).toEqual(['linux/amd64']);
  });
});

describe('defaultBuilderTargets', () => {
  it('keeps the platforms this machine runs natively and names the others in a note', () => {
    const offered = [p('linux/amd64'), p('linux/arm64'), p('linux/ppc64le'), p('linux/s390x')];
    const r = defaultBuilderTargets(offered, machine);
    expect(names(r.targets)).toEqual(['linux/amd64']);
    expect(r.note).toBe(
      "the default builder: building linux/amd64 (this machine's own); pass --platform for linux/arm64, linux/ppc64le, linux/s390x",
    );
    expect(defaultBuilderTargets([p('linux/amd64')], machine).note).toBeUndefined();
    expect(() => defaultBuilderTargets([p('linux/s390x')], machine)).toThrow(
      expect.objectContaining({
        code: 'NO_TARGETS',
        message: expect.stringContaining('runs none of the default builder'),
      }),
    );
  });
});
