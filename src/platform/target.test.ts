import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { anyTargetMatches, completeTarget, parseOsRelease, targetEnv, targetMatches } from './target.js';

const jammyArm = { os: 'linux', arch: 'arm64', distro: { name: 'ubuntu', version: '22.04' } };

describe('targetMatches', () => {
  it('treats empty fields on either side as wildcards', () => {
    expect(targetMatches(jammyArm, {})).toBe(true);
    expect(targetMatches(jammyArm, { os: 'linux' })).toBe(true);
    expect(targetMatches({}, { os: 'linux', arch: 'amd64' })).toBe(true);
    expect(targetMatches(jammyArm, { os: 'linux', arch: 'amd64' })).toBe(false);
    expect(targetMatches(jammyArm, { os: 'windows' })).toBe(false);
  });

  it('compares variants and normalizes arch aliases', () => {
    const armv7 = { os: 'linux', arch: 'arm', variant: 'v7' };
    expect(targetMatches(armv7, { arch: 'arm', variant: 'v7' })).toBe(true);
    expect(targetMatches(armv7, { arch: 'arm', variant: 'v6' })).toBe(false);
    expect(targetMatches(armv7, { arch: 'arm' })).toBe(true);
    expect(targetMatches({ os: 'linux', arch: 'amd64' }, { arch: 'x86_64' })).toBe(true);
    expect(targetMatches(jammyArm, { arch: 'aarch64' })).toBe(true);
  });

  it('needs a matching distro when the buildpack lists distros', () => {
    expect(targetMatches(jammyArm, { distros: [{ name: 'ubuntu', version: '22.04' }] })).toBe(true);
    expect(targetMatches(jammyArm, { distros: [{ name: 'debian' }, { name: 'ubuntu' }] })).toBe(true);
    expect(targetMatches(jammyArm, { distros: [{ name: 'ubuntu', version: '24.04' }] })).toBe(false);
    expect(targetMatches({ os: 'linux', arch: 'arm64' }, { distros: [{ name: 'ubuntu' }] })).toBe(false);
  });

  it('accepts anything when a buildpack has no targets at all', () => {
    expect(anyTargetMatches(jammyArm, [])).toBe(true);
    expect(anyTargetMatches(jammyArm, [{ arch: 'amd64' }, { arch: 'arm64' }])).toBe(true);
    expect(anyTargetMatches(jammyArm, [{ arch: 'amd64' }])).toBe(false);
  });
});

describe('target env and completion', () => {
  const dirs: string[] = [];
  afterAll(async () => {
    for (const d of dirs) await rm(d, { recursive: true, force: true });
  });

  it('exports CNB_TARGET_* with optional values only when known', () => {
    expect(
      targetEnv({ os: 'linux', arch: 'arm', variant: 'v7', distro: { name: 'debian', version: '12' } }),
    ).toEqual({
      CNB_TARGET_OS: 'linux',
      CNB_TARGET_ARCH: 'arm',
      CNB_TARGET_ARCH_VARIANT: 'v7',
      CNB_TARGET_DISTRO_NAME: 'debian',
      CNB_TARGET_DISTRO_VERSION: '12',
    });
    expect(targetEnv({ os: 'linux', arch: 'amd64' })).toEqual({
      CNB_TARGET_OS: 'linux',
      CNB_TARGET_ARCH: 'amd64',
    });
  });

  it('reads ID and VERSION_ID from os-release', () => {
    expect(parseOsRelease('NAME="Debian GNU/Linux"\nID=debian\nVERSION_ID="12"\n')).toEqual({
      name: 'debian',
      version: '12',
    });
  });

  it('fills os, arch and the distro of the build environment when the run image lacks them', async () => {
    const dir = await mkdtemp(join(tmpdir(), 'target-'));
    dirs.push(dir);
    const osRelease = join(dir, 'os-release');
    await writeFile(osRelease, 'ID=alpine\nVERSION_ID=3.20.1\n');
    expect(await completeTarget(undefined, { osReleasePath: osRelease, defaultArch: 'riscv64' })).toEqual({
      os: 'linux',
      arch: 'riscv64',
      distro: { name: 'alpine', version: '3.20.1' },
    });
    // Distro data from the run image wins over the build environment's.
    expect(await completeTarget(jammyArm, { osReleasePath: osRelease })).toEqual(jammyArm);
    expect(
      await completeTarget({ os: 'linux', arch: 'amd64' }, { osReleasePath: join(dir, 'missing') }),
    ).toEqual({
      os: 'linux',
      arch: 'amd64',
    });
  });
});
