import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Volume } from 'memfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { BinfmtFs } from '../exec/binfmt.js';
import { findRuntime } from '../exec/runtime.js';
import { environmentReport } from './report.js';

let root: string;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-report-'));
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A binfmt_misc dir as the kernel shows it: handlers named anyhow; only their ELF magic says the architecture. */
const binfmtFs = (files: Record<string, string>) =>
  Volume.fromJSON(files, '/binfmt').promises as unknown as BinfmtFs;

describe('environmentReport binfmt', () => {
  it('lists the handlers whose magic decodes to an architecture, whatever their names', async () => {
    const fs = binfmtFs({
      register: '',
      status: 'enabled\n',
      // Not named qemu-*, but its magic is 64-bit little-endian e_machine 183: arm64.
      'emu-a64': `enabled
interpreter /opt/emu/a64
flags: OF
offset 0
magic 7f454c460201010000000000000000000200b700
mask ffffffffffffff00fffffffffffffffffeffffff
`,
      // Named like an arm64 handler; its magic is 32-bit ARM, and it has no F flag.
      'qemu-aarch64': `disabled
interpreter /usr/bin/qemu-arm
flags: OC
offset 0
magic 7f454c4601010100000000000000000002002800
mask ffffffffffffff00fffffffffffffffffeffffff
`,
      // Named qemu-*, but no ELF magic: not an architecture.
      'qemu-python': `enabled
interpreter /usr/bin/python3
flags:
offset 0
magic 6f0d0d0a
`,
    });
    const env = { PATH: '', HOME: join(root, 'home'), PACKFARM_HOME: join(root, 'data') };
    const r = await environmentReport({ version: '0.0.0', env, binfmt: { dir: '/binfmt', fs } });
    expect(r.binfmt).toEqual({
      available: true,
      enabled: true,
      entries: [
        { name: 'emu-a64', platform: 'linux/arm64', enabled: true, interpreter: '/opt/emu/a64', flags: 'OF' },
        {
          name: 'qemu-aarch64',
          platform: 'linux/arm/v7',
          enabled: false,
          interpreter: '/usr/bin/qemu-arm',
          flags: 'OC',
        },
      ],
    });
    const none = await environmentReport({ version: '0.0.0', env, binfmt: { dir: '/absent', fs } });
    expect(none.binfmt).toEqual({ available: false, enabled: false, entries: [] });
  });
});

describe('environmentReport runc', () => {
  it('names the runtime the oci executor runs (findRuntime), not the first runc on PATH', async () => {
    // A different runc earlier on PATH: builds run /usr/sbin/runc, so the report must say that one.
    const bin = join(root, 'other-bin');
    await mkdir(bin, { recursive: true });
    await writeFile(join(bin, 'runc'), '#!/bin/sh\necho "runc version 0.0.0-elsewhere"\n', { mode: 0o755 });
    const env = {
      PATH: `${bin}:/usr/sbin:/usr/bin`,
      HOME: join(root, 'home'),
      PACKFARM_HOME: join(root, 'data'),
    };
    const r = await environmentReport({ version: '0.0.0', env, binfmt: { dir: join(root, 'no-binfmt') } });
    const runtime = await findRuntime(env);
    expect(runtime).toBe('/usr/sbin/runc');
    expect(r.runc.path).toBe(runtime);
    expect(r.runc.version).not.toContain('elsewhere');
  });
});
