import { readFileSync } from 'node:fs';
import { Volume } from 'memfs';
import { describe, expect, it } from 'vitest';
import {
  type BinfmtFs,
  detectPlatforms,
  elfRunnable,
  elfPlatformOf,
  howToRun,
  parseBinfmtEntry,
  readBinfmt,
} from './binfmt.js';
import { decodeBinfmtField, parseBinfmtConfLine, registrationLine } from './emulation.js';

/** Handler files as Debian's qemu-user-static registers them (magic and mask copied from /proc). */
const AARCH64 = `enabled
interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
`;
// The mask ignores e_machine's high byte.
const PPC64LE = `enabled
interpreter /usr/libexec/qemu-binfmt/ppc64le-binfmt-P
flags: POF
offset 0
magic 7f454c4602010100000000000000000002001500
mask fffffffffffffffcfffffffffffffffffeffff00
`;
const S390X = `enabled
interpreter /usr/libexec/qemu-binfmt/s390x-binfmt-P
flags: POF
offset 0
magic 7f454c4602020100000000000000000000020016
mask fffffffffffffffcfffffffffffffffffffeffff
`;
// Named like an arm64 handler, but its magic is 32-bit ARM, and it lacks F.
const MISNAMED_ARM = `enabled
interpreter /usr/bin/qemu-arm
flags: OC
offset 0
magic 7f454c4601010100000000000000000002002800
mask ffffffffffffff00fffffffffffffffffeffffff
`;
const DISABLED_RISCV = `disabled
interpreter /usr/libexec/qemu-binfmt/riscv64-binfmt-P
flags: POF
offset 0
magic 7f454c460201010000000000000000000200f300
mask ffffffffffffff00fffffffffffffffffeffffff
`;
const PYTHON = `enabled
interpreter /usr/bin/python3.11
flags:
offset 0
magic 6f0d0d0a
`;
const EXTENSION = `enabled
interpreter /usr/bin/wine
flags:
extension .exe
`;

function fsOf(files: Record<string, string>): BinfmtFs {
  const vol = Volume.fromJSON(files);
  return vol.promises as unknown as BinfmtFs;
}

const hex = (s: string) => Buffer.from(s, 'hex');

describe('elfPlatformOf', () => {
  it('decodes class, byte order and e_machine from the magic under its mask', () => {
    expect(elfPlatformOf(hex('7f454c460201010000000000000000000200b700'), undefined)).toEqual({
      os: 'linux',
      architecture: 'arm64',
    });
    expect(elfPlatformOf(hex('7f454c4602010100000000000000000002003e00'), undefined)?.architecture).toBe(
      'amd64',
    );
    expect(elfPlatformOf(hex('7f454c4601010100000000000000000002000300'), undefined)?.architecture).toBe(
      '386',
    );
    // e_machine 21 is ppc64le when little-endian and ppc64 when big-endian.
    expect(elfPlatformOf(hex('7f454c4602020100000000000000000000020015'), undefined)?.architecture).toBe(
      'ppc64',
    );
    expect(
      elfPlatformOf(
        hex('7f454c4602010100000000000000000002001500'),
        hex('fffffffffffffffcfffffffffffffffffeffff00'),
      ),
    ).toEqual({ os: 'linux', architecture: 'ppc64le' });
  });

  it('refuses magics that are not ELF, do not pin class or byte order, or start elsewhere', () => {
    expect(elfPlatformOf(hex('6f0d0d0a'), undefined)).toBeUndefined();
    expect(elfPlatformOf(hex('7f454c460201010000000000000000000200b700'), undefined, 4)).toBeUndefined();
    // Class byte masked out: could be 32- or 64-bit.
    const loose = hex('ffffffff00ffff00fffffffffffffffffeffffff');
    expect(elfPlatformOf(hex('7f454c460201010000000000000000000200b700'), loose)).toBeUndefined();
    // e_machine fully masked out: any architecture.
    const any = hex('ffffffffffffff00fffffffffffffffffeff0000');
    expect(elfPlatformOf(hex('7f454c460201010000000000000000000200b700'), any)).toBeUndefined();
    // An architecture without an OCI name here (SPARC V9, 43).
    expect(elfPlatformOf(hex('7f454c460202010000000000000000000002002b'), undefined)).toBeUndefined();
  });
});

describe('binfmt_misc entries', () => {
  it('parses a handler file: enabled, interpreter, flags, F', () => {
    const e = parseBinfmtEntry('qemu-aarch64', AARCH64);
    expect(e).toMatchObject({
      name: 'qemu-aarch64',
      enabled: true,
      interpreter: '/usr/libexec/qemu-binfmt/aarch64-binfmt-P',
      flags: 'POF',
      fixBinary: true,
      offset: 0,
      platform: { os: 'linux', architecture: 'arm64' },
    });
    expect(parseBinfmtEntry('x', EXTENSION)).toMatchObject({ enabled: true, fixBinary: false });
    expect(parseBinfmtEntry('x', EXTENSION).platform).toBeUndefined();
  });

  it('reports native plus decodable enabled handlers; the platform comes from the magic, not the name', async () => {
    const fs = fsOf({
      '/b/register': '',
      '/b/status': 'enabled\n',
      '/b/qemu-aarch64': AARCH64,
      '/b/qemu-ppc64le': PPC64LE,
      '/b/qemu-s390x': S390X,
      '/b/qemu-aarch64-old': MISNAMED_ARM,
      '/b/qemu-riscv64': DISABLED_RISCV,
      '/b/python3.11': PYTHON,
      '/b/wine': EXTENSION,
    });
    const m = await detectPlatforms({ dir: '/b', fs, host: { os: 'linux', architecture: 'amd64' } });
    expect(m.native).toEqual([
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: '386' },
    ]);
    expect(
      m.emulated.map((e) => [e.handler, e.platform.architecture, e.platform.variant, e.usableInContainers]),
    ).toEqual([
      ['qemu-aarch64-old', 'arm', 'v7', false],
      ['qemu-aarch64', 'arm64', undefined, true],
      ['qemu-ppc64le', 'ppc64le', undefined, true],
      ['qemu-s390x', 's390x', undefined, true],
    ]);
    expect(howToRun(m, { os: 'linux', architecture: 'amd64' })).toBe('native');
    expect(howToRun(m, { os: 'linux', architecture: 'arm64', variant: 'v8' })).toBe('emulated');
    // Registered without F: a container root filesystem cannot use it.
    expect(howToRun(m, { os: 'linux', architecture: 'arm', variant: 'v7' })).toBeUndefined();
    expect(howToRun(m, { os: 'linux', architecture: 'riscv64' })).toBeUndefined();
  });

  it('a disabled facility or an unmounted binfmt_misc emulates nothing', async () => {
    const off = fsOf({ '/b/register': '', '/b/status': 'disabled\n', '/b/qemu-aarch64': AARCH64 });
    expect((await detectPlatforms({ dir: '/b', fs: off })).emulated).toEqual([]);
    const none = fsOf({ '/b/.keep': '' });
    expect(await readBinfmt('/b', none)).toEqual({ mounted: false, enabled: false, entries: [] });
  });

  it('reads this machine’s /proc: every enabled qemu handler decodes to the architecture its magic names', async () => {
    const state = await readBinfmt();
    const machine = await detectPlatforms();
    expect(machine.native[0]?.architecture).toBe(process.arch === 'x64' ? 'amd64' : process.arch);
    for (const e of state.entries.filter((x) => x.enabled && x.magic)) {
      // Cross-check the decoding against the ELF header bytes themselves.
      const magic = e.magic!;
      if (magic.subarray(0, 4).toString('latin1') !== '\x7fELF' || !e.platform) continue;
      const le = magic[5] === 1;
      const machineNo = le ? magic.readUInt16LE(18) : magic.readUInt16BE(18);
      expect([62, 3, 183, 40, 21, 22, 243, 258, 8], e.name).toContain(machineNo);
      if (e.fixBinary) expect(howToRun(machine, e.platform), e.name).toBeDefined();
    }
  });
});

describe('elfRunnable', () => {
  const header = (cls: number, data: number, machine: number) => {
    const h = Buffer.alloc(64);
    h.write('\x7fELF', 'latin1');
    h.set([cls, data, 1], 4);
    if (data === 1) {
      h.writeUInt16LE(2, 16);
      h.writeUInt16LE(machine, 18);
    } else {
      h.writeUInt16BE(2, 16);
      h.writeUInt16BE(machine, 18);
    }
    return h;
  };
  const native = [{ os: 'linux', architecture: 'amd64' }];

  it('matches a binary against native platforms and handler magics as the kernel does', async () => {
    const state = await readBinfmt(
      '/b',
      fsOf({
        '/b/register': '',
        '/b/status': 'enabled\n',
        '/b/qemu-aarch64': AARCH64,
        '/b/arm': MISNAMED_ARM,
      }),
    );
    expect(elfRunnable(header(2, 1, 62), native, state)).toEqual({
      runnable: true,
      describe: 'a linux/amd64 binary',
    });
    expect(elfRunnable(header(2, 1, 183), native, state)?.runnable).toBe(true);
    // The arm handler has no F flag: not usable from a container.
    expect(elfRunnable(header(1, 1, 40), native, state)?.runnable).toBe(false);
    expect(elfRunnable(header(2, 1, 50), native, state)).toEqual({
      runnable: false,
      describe: 'an ELF binary for machine 50 (64-bit, little-endian)',
    });
    expect(elfRunnable(Buffer.from('#!/bin/sh\n'), native, state)).toBeUndefined();
  });
});

describe('binfmt.d registrations', () => {
  it('decodes \\x escapes, reads the platform, and adds the F flag when registering', () => {
    expect(decodeBinfmtField('\\x7f\\x45LF\\\\')).toEqual(Buffer.from([0x7f, 0x45, 0x4c, 0x46, 0x5c]));
    const line =
      ':qemu-s390x:M::\\x7f\\x45\\x4c\\x46\\x02\\x02\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\x16:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfc\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff:/usr/libexec/qemu-binfmt/s390x-binfmt-P:OP';
    const r = parseBinfmtConfLine(line, 'qemu-s390x.conf');
    expect(r?.platform).toEqual({ os: 'linux', architecture: 's390x' });
    expect(registrationLine(r!)).toBe(`${line}F`);
    expect(parseBinfmtConfLine('# comment', 'x')).toBeUndefined();
  });

  it('every qemu-*.conf Debian installs here names the architecture of its file name', () => {
    // The file name is only the cross-check; the code reads the magic.
    const names: Record<string, string> = {
      aarch64: 'arm64',
      arm: 'arm',
      ppc64le: 'ppc64le',
      s390x: 's390x',
      riscv64: 'riscv64',
    };
    for (const [qemu, arch] of Object.entries(names)) {
      const text = readFileSync(`/usr/lib/binfmt.d/qemu-${qemu}.conf`, 'utf8');
      expect(parseBinfmtConfLine(text.split('\n')[0]!, qemu)?.platform?.architecture, qemu).toBe(arch);
    }
  });
});
