import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isPackfarmError } from '../../util/errors.js';
import { configureRootfs, parseAlternatives, readNode, scriptCovered } from './configure.js';
import { parseControl } from './deb.js';
import { BaseTomlSchema, parseBaseArch, resolveBaseDefinition } from './definition.js';
import { type Rootfs, createRootfs, mergedUsrPath, rootfsEntries, setNode } from './rootfs.js';

let tmp: string;
beforeEach(async () => {
  tmp = await mkdtemp(join(tmpdir(), 'packfarm-base-'));
});
afterEach(async () => {
  await rm(tmp, { recursive: true, force: true });
});

const code = (fn: () => unknown): string | undefined => {
  try {
    fn();
    return undefined;
  } catch (err) {
    return isPackfarmError(err) ? `${err.code}: ${err.message}` : String(err);
  }
};

describe('base definition', () => {
  it('maps OCI and Debian architecture names both ways, arm64 without a variant', () => {
    expect(parseBaseArch('aarch64', 'x')).toEqual({ debian: 'arm64', architecture: 'arm64' });
    expect(parseBaseArch('linux/arm64/v8', 'x').debian).toBe('arm64');
    expect(parseBaseArch('ppc64le', 'x').debian).toBe('ppc64el');
    expect(parseBaseArch('arm/v7', 'x')).toEqual({ debian: 'armhf', architecture: 'arm', variant: 'v7' });
    expect(code(() => parseBaseArch('sparc', '--arch'))).toMatch(/^UNKNOWN_ARCH: --arch: "sparc"/);
  });

  it('lays flags over the file and fills the defaults', () => {
    const raw = BaseTomlSchema.parse({
      architectures: ['amd64'],
      build: { packages: ['bash', 'coreutils'], 'user-id': 2000 },
      run: { packages: ['dash'] },
    });
    const def = resolveBaseDefinition(
      raw,
      { arch: ['arm64', 'amd64', 'x86_64'], runPackages: ['libc6', 'dash'] },
      'b.toml',
    );
    expect(def.arches.map((a) => a.debian)).toEqual(['arm64', 'amd64']);
    expect(def.release).toEqual({ version: '12', codename: 'bookworm' });
    expect(def.id).toBe('io.packfarm.debian-12');
    expect(def.build).toMatchObject({
      packages: ['bash', 'coreutils'],
      essential: true,
      userId: 2000,
      groupId: 1000,
    });
    expect(def.run).toMatchObject({
      packages: ['dash', 'libc6'],
      essential: false,
      userId: 1002,
      groupId: 1000,
    });
  });

  it('names the source and the field of bad input', () => {
    expect(code(() => resolveBaseDefinition({ distro: 'ubuntu:24.04' }, {}, 'b.toml'))).toMatch(
      /^UNKNOWN_DISTRO: b.toml: distro: "ubuntu:24.04"/,
    );
    expect(code(() => resolveBaseDefinition({}, { packages: ['Bad_Name'] }, 'flags'))).toMatch(
      /^INVALID_ARGS: --packages: "Bad_Name"/,
    );
    expect(code(() => resolveBaseDefinition({ build: { packages: ['x1'] } }, {}, 'b.toml'))).toMatch(
      /run.packages: the run image has no packages/,
    );
  });
});

describe('maintainer script handling', () => {
  it('parses literal update-alternatives calls with their slaves, and skips ones built from variables', () => {
    const script = [
      '#!/bin/sh',
      'set -e',
      'update-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5 \\',
      '  --slave /usr/share/man/man1/awk.1.gz awk.1.gz /usr/share/man/man1/mawk.1.gz',
      'update-alternatives --install /usr/bin/x x "$X" 10',
    ].join('\n');
    expect(parseAlternatives(script, 'mawk')).toEqual([
      {
        link: '/usr/bin/awk',
        name: 'awk',
        path: '/usr/bin/mawk',
        priority: 5,
        slaves: [
          { link: '/usr/share/man/man1/awk.1.gz', name: 'awk.1.gz', path: '/usr/share/man/man1/mawk.1.gz' },
        ],
        package: 'mawk',
      },
    ]);
  });

  it('counts a script covered only when every line is structure or something handled', () => {
    const tarPostinst = [
      '#!/bin/sh',
      'set -e',
      'case "$1" in',
      '    configure|abort-deconfigure|abort-remove)',
      '\tupdate-alternatives --install /usr/sbin/rmt rmt /usr/sbin/rmt-tar 50 \\',
      '\t\t--slave /usr/share/man/man8/rmt.8.gz rmt.8.gz \\',
      '\t\t\t/usr/share/man/man8/rmt-tar.8.gz ',
      '    ;;',
      '    upgrade)',
      '    ;;',
      'esac',
    ].join('\n');
    expect(scriptCovered(tarPostinst)).toBe(true);
    const dh =
      '#!/bin/sh\nset -e\n# Automatically added by dh_installsystemd/13.11\nsystemctl enable x\n# End automatically added section\n';
    expect(scriptCovered(dh)).toBe(true);
    expect(scriptCovered('#!/bin/sh\nset -e\nln -sf /etc/ssl /usr/lib/ssl\n')).toBe(false);
    expect(
      scriptCovered(
        '#!/bin/sh\n# Automatically added by dh_python3\npy3compile -p x\n# End automatically added section\n',
      ),
    ).toBe(false);
  });
});

function fakePackage(fs: Rootfs, name: string, members: Record<string, string> = {}) {
  const control = `Package: ${name}\nVersion: 1.0\nArchitecture: amd64\nDescription: test\n more`;
  fs.packages.push({
    name,
    version: '1.0',
    arch: 'amd64',
    control: {
      control,
      fields: parseControl(control),
      members: new Map(Object.entries({ control, ...members }).map(([k, v]) => [k, Buffer.from(v)])),
    },
    files: ['/.'],
  });
}

const file = (content: string, owner: string, mode = 0o644) => ({
  type: 'file' as const,
  mode,
  uid: 0,
  gid: 0,
  content: Buffer.from(content),
  owner,
});

describe('root filesystem', () => {
  it('stores /bin, /sbin and /lib* under /usr and links them', async () => {
    expect(mergedUsrPath('bin/dash')).toBe('usr/bin/dash');
    expect(mergedUsrPath('lib64/ld-linux-x86-64.so.2')).toBe('usr/lib64/ld-linux-x86-64.so.2');
    expect(mergedUsrPath('library/x')).toBe('library/x');
    const fs = await createRootfs(tmp);
    setNode(fs, 'usr/lib64/ld.so', file('elf', 'libc6', 0o755));
    const entries = rootfsEntries(fs);
    const links = entries.filter((e) => e.type === 'symlink').map((e) => [e.path, e.linkname]);
    expect(links).toEqual(
      expect.arrayContaining([
        ['bin', 'usr/bin'],
        ['sbin', 'usr/sbin'],
        ['lib', 'usr/lib'],
        ['lib64', 'usr/lib64'],
      ]),
    );
    expect(links.map(([p]) => p)).not.toContain('libx32');
  });

  it('makes the first name of a hard-linked file in layer order hold the bytes', async () => {
    const fs = await createRootfs(tmp);
    setNode(fs, 'usr/bin/z', file('bytes', 'p', 0o755));
    setNode(fs, 'usr/bin/a', {
      type: 'link',
      mode: 0o755,
      uid: 0,
      gid: 0,
      linkname: 'usr/bin/z',
      owner: 'p',
    });
    const entries = rootfsEntries(fs);
    expect(entries.find((e) => e.path === 'usr/bin/a')).toMatchObject({
      type: 'file',
      content: Buffer.from('bytes'),
    });
    expect(entries.find((e) => e.path === 'usr/bin/z')).toMatchObject({
      type: 'link',
      linkname: 'usr/bin/a',
    });
  });

  it('notes a file that replaces another package’s', async () => {
    const fs = await createRootfs(tmp);
    setNode(fs, 'usr/bin/x', file('1', 'a'));
    setNode(fs, 'usr/bin/x', file('2', 'b'));
    expect(fs.warnings).toEqual([{ package: 'b', message: '/usr/bin/x replaces the one from a' }]);
  });

  it('does what the handled scripts would: users, alternatives, the CA bundle, dpkg status; warns on the rest', async () => {
    const fs = await createRootfs(tmp);
    fakePackage(fs, 'base-passwd');
    setNode(
      fs,
      'usr/share/base-passwd/passwd.master',
      file('root:x:0:0:root:/root:/bin/bash\n', 'base-passwd'),
    );
    setNode(fs, 'usr/share/base-passwd/group.master', file('root:x:0:\nmail:x:8:\n', 'base-passwd'));
    fakePackage(fs, 'dash');
    setNode(fs, 'usr/bin/dash', file('elf', 'dash', 0o755));
    setNode(fs, 'usr/bin/sh', {
      type: 'symlink',
      mode: 0o777,
      uid: 0,
      gid: 0,
      linkname: 'dash',
      owner: 'dash',
    });
    fakePackage(fs, 'mawk', {
      postinst: '#!/bin/sh\nset -e\nupdate-alternatives --install /usr/bin/awk awk /usr/bin/mawk 5\n',
    });
    setNode(fs, 'usr/bin/mawk', file('elf', 'mawk', 0o755));
    fakePackage(fs, 'ca-certificates', { postinst: '#!/bin/sh\nupdate-ca-certificates\n' });
    setNode(fs, 'usr/share/ca-certificates/mozilla/B.crt', file('B', 'ca-certificates'));
    setNode(fs, 'usr/share/ca-certificates/mozilla/A.crt', file('A\n', 'ca-certificates'));
    fakePackage(fs, 'weird', { postinst: '#!/bin/sh\nset -e\nmkdir /var/weird\n' });

    const { handled } = await configureRootfs(fs, {
      userId: 1001,
      groupId: 1000,
      userName: 'cnb',
      groupName: 'cnb',
      home: '/home/cnb',
    });
    const text = async (p: string) => (await readNode(fs, p))?.toString('utf8');
    expect(await text('etc/passwd')).toBe(
      'root:x:0:0:root:/root:/bin/bash\ncnb:x:1001:1000:cnb:/home/cnb:/bin/sh\n',
    );
    expect(await text('etc/group')).toBe('root:x:0:\nmail:x:8:\ncnb:x:1000:\n');
    expect(fs.nodes.get('home/cnb')).toMatchObject({ type: 'dir', uid: 1001, gid: 1000 });
    expect(fs.nodes.get('usr/bin/awk')).toMatchObject({ type: 'symlink', linkname: '/etc/alternatives/awk' });
    expect(fs.nodes.get('etc/alternatives/awk')).toMatchObject({
      type: 'symlink',
      linkname: '/usr/bin/mawk',
    });
    expect(await text('etc/ssl/certs/ca-certificates.crt')).toBe('A\nB\n');
    expect(fs.nodes.get('etc/ssl/certs/A.pem')).toMatchObject({
      linkname: '/usr/share/ca-certificates/mozilla/A.crt',
    });
    const status = (await text('var/lib/dpkg/status')) ?? '';
    expect(status).toContain('Package: mawk\nStatus: install ok installed\nVersion: 1.0');
    expect(handled.map((h) => h.package)).toEqual(
      expect.arrayContaining(['mawk', 'ca-certificates', 'dash']),
    );
    expect(fs.warnings.map((w) => w.package)).toEqual(['ca-certificates', 'weird']);
  });
});
