import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import { setupEmulation } from './emulation.js';

/**
 * setupEmulation against a stand-in binfmt_misc dir (plain files: `register` receives the lines, a handler
 * file receives `-1` when it is removed) and a binfmt.d dir, so the replace-and-register logic is checked
 * without touching the kernel. The real registry is exercised by test/integration/node-cli.test.ts.
 */
let root: string;
let conf: string;
let binfmt: string;
let interp: string;
const line = (name: string, magic: string, flags: string) =>
  `:${name}:M::${magic}:\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\x00\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xff\\xfe\\xff\\xff\\xff:${interp}:${flags}`;
const AARCH64_MAGIC =
  '\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xb7\\x00';
const RISCV_MAGIC =
  '\\x7f\\x45\\x4c\\x46\\x02\\x01\\x01\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x00\\x02\\x00\\xf3\\x00';

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-emulation-'));
  conf = join(root, 'binfmt.d');
  binfmt = join(root, 'binfmt_misc');
  interp = join(root, 'qemu-aarch64-static');
  await mkdir(conf);
  await mkdir(binfmt);
  await writeFile(interp, '');
  await writeFile(join(conf, 'qemu-aarch64.conf'), `${line('qemu-aarch64', AARCH64_MAGIC, 'OP')}\n`);
  await writeFile(join(conf, 'qemu-riscv64.conf'), `# riscv\n${line('qemu-riscv64', RISCV_MAGIC, 'OPF')}\n`);
  await writeFile(join(conf, 'python3.11.conf'), ':python:M::\\x6f\\x0d::/usr/bin/python3.11:\n');
  await writeFile(join(binfmt, 'status'), 'enabled\n');
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

describe('setupEmulation', () => {
  it('replaces a handler registered without F and registers it with F; leaves one with F alone', async () => {
    const uid = vi.spyOn(process, 'getuid').mockReturnValue(0);
    try {
      await writeFile(join(binfmt, 'register'), '');
      // Registered earlier without F.
      await writeFile(
        join(binfmt, 'qemu-aarch64'),
        `enabled\ninterpreter ${interp}\nflags: OP\noffset 0\nmagic 7f454c460201010000000000000000000200b700\nmask ffffffffffffff00fffffffffffffffffeffffff\n`,
      );
      const r = await setupEmulation({
        confDir: conf,
        binfmtDir: binfmt,
        platforms: [{ os: 'linux', architecture: 'arm64' }],
        host: { os: 'linux', architecture: 'amd64' },
      });
      expect(r.mounted).toBe(false);
      expect(r.registered).toEqual([
        {
          name: 'qemu-aarch64',
          platform: { os: 'linux', architecture: 'arm64' },
          interpreter: interp,
          flags: 'OPF',
        },
      ]);
      expect(await readFile(join(binfmt, 'qemu-aarch64'), 'utf8')).toBe('-1');
      expect(await readFile(join(binfmt, 'register'), 'utf8')).toBe(
        line('qemu-aarch64', AARCH64_MAGIC, 'OPF'),
      );

      // Now present with F (as the kernel would show it): nothing is written.
      await writeFile(
        join(binfmt, 'qemu-aarch64'),
        `enabled\ninterpreter ${interp}\nflags: POF\noffset 0\nmagic 7f454c460201010000000000000000000200b700\n`,
      );
      await writeFile(join(binfmt, 'register'), '');
      const again = await setupEmulation({
        confDir: conf,
        binfmtDir: binfmt,
        platforms: [{ os: 'linux', architecture: 'arm64' }],
        host: { os: 'linux', architecture: 'amd64' },
      });
      expect(again.registered).toEqual([]);
      expect(again.present.map((p) => p.name)).toEqual(['qemu-aarch64']);
      expect(await readFile(join(binfmt, 'register'), 'utf8')).toBe('');

      // On an arm64 host, arm64 code is native: its handler is never registered.
      const onArm = await setupEmulation({
        confDir: conf,
        binfmtDir: binfmt,
        host: { os: 'linux', architecture: 'arm64' },
      });
      expect([...onArm.registered, ...onArm.present].map((p) => p.name)).toEqual(['qemu-riscv64']);
    } finally {
      uid.mockRestore();
    }
  });

  it('names what is missing: root, the emulators, a platform nothing emulates', async () => {
    const uid = vi.spyOn(process, 'getuid');
    try {
      uid.mockReturnValue(1000);
      const notRoot = await setupEmulation({ confDir: conf, binfmtDir: binfmt }).catch((e) => e);
      expect(isPackfarmError(notRoot, 'EMULATION_NEEDS_ROOT')).toBe(true);
      uid.mockReturnValue(0);
      const none = await setupEmulation({ confDir: join(root, 'empty'), binfmtDir: binfmt }).catch((e) => e);
      expect(isPackfarmError(none, 'QEMU_MISSING')).toBe(true);
      expect(none.hint).toBe('install the emulators: apt-get install qemu-user-static');
      const s390x = await setupEmulation({
        confDir: conf,
        binfmtDir: binfmt,
        platforms: [{ os: 'linux', architecture: 's390x' }],
      }).catch((e) => e);
      expect(s390x.message).toMatch(/no qemu-user-static handler in .* for linux\/s390x/);
    } finally {
      uid.mockRestore();
    }
  });
});
