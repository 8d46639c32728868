import { execFileSync } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { createOciExecutor, type OciExecutor } from '../../src/exec/oci.js';
import { createBuildpackStore } from '../../src/buildpack/descriptor.js';
import { createBuildImageExecutor, prepareBuildImageRootfs } from '../../src/phase/build-image.js';
import { create } from '../../src/phase/create.js';
import { createPodmanRunner } from '../helpers/run-image.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import type { ImageStore } from '../../src/image/store.js';
import type { Platform } from '../../src/oci/platform.js';
import { build } from '../../src/phase/build.js';
import { detect } from '../../src/phase/detect.js';
import { isPackfarmError } from '../../src/util/errors.js';
import { writeBusyboxBuildImage, writeFactsBuildpack } from '../helpers/build-image.js';
import { writeTestImage } from '../helpers/images.js';

/**
 * The OCI-runtime executor for real: runc runs a fixture buildpack's bin/detect and bin/build inside busybox
 * build images of two architectures (arm64 through the kernel's qemu binfmt_misc handler, which the
 * integration setup registers), driven by the real detect and build phases.
 */

let root: string;
let dataDir: string;
let buildpacksDir: string;
let bp: { id: string; version: string };
const executors: OciExecutor[] = [];

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-exec-oci-'));
  dataDir = join(root, 'data');
  buildpacksDir = join(root, 'buildpacks');
  bp = await writeFactsBuildpack(buildpacksDir);
});
afterAll(async () => {
  for (const e of executors) await e.close();
  await rm(root, { recursive: true, force: true });
});

async function buildImage(platform: Platform): Promise<{ store: ImageStore; digest: string }> {
  const store = await openLayoutStore(join(root, `layout-${platform.architecture}`), { create: true });
  const img = await writeBusyboxBuildImage({ store, tag: 'build', platform, env: ['IMAGE_ONLY=1'] });
  return { store, digest: img.digest };
}

let wsCount = 0;
async function workspace() {
  const dir = join(root, `ws${++wsCount}`);
  const ws = { app: join(dir, 'app'), layers: join(dir, 'layers'), platform: join(dir, 'platform') };
  for (const d of Object.values(ws)) await mkdir(d, { recursive: true });
  await writeFile(join(ws.app, 'index.txt'), 'app file\n');
  return ws;
}

async function executorFor(platform: Platform, opts: { network?: boolean; killGraceMs?: number } = {}) {
  const { store, digest } = await buildImage(platform);
  const rootfs = await prepareBuildImageRootfs({ store, image: digest, dataDir });
  const ws = await workspace();
  const exec = await createOciExecutor({
    rootfs: rootfs.dir,
    dirs: { ...ws, buildpacks: buildpacksDir },
    uid: rootfs.config.uid,
    gid: rootfs.config.gid,
    env: rootfs.config.env,
    platform,
    ...opts,
  });
  executors.push(exec);
  return { exec, ws, rootfs };
}

const sh = async (exec: OciExecutor, script: string, extra: { timeoutMs?: number; stdin?: string } = {}) =>
  exec.run({
    argv: ['/bin/sh', '-c', script],
    cwd: '/workspace',
    env: { PATH: '/bin' },
    capture: true,
    ...extra,
  });

describe('oci executor: detect and build inside the build image', () => {
  for (const [arch, machine] of [
    ['amd64', 'x86_64'],
    ['arm64', 'aarch64'],
    // Big-endian, through qemu as well.
    ['s390x', 's390x'],
  ] as const) {
    it(`linux/${arch}: buildpacks run as the CNB user with container paths and the image's env (uname -m = ${machine})`, async () => {
      const platform = { os: 'linux', architecture: arch };
      const { exec, ws } = await executorFor(platform);
      process.env.PACKFARM_CANARY = 'host-canary';
      process.env.CNB_REGISTRY_AUTH = '{"registry.example":"Basic c2VjcmV0OnNlY3JldA=="}';
      try {
        const detected = await detect({
          appDir: ws.app,
          platformDir: ws.platform,
          buildpacksDir,
          order: [{ group: [{ ...bp, optional: false }] }],
          target: { os: 'linux', arch },
          executor: exec,
        });
        const meta = detected.plan.entries[0]?.requires[0]?.metadata as Record<string, string>;
        expect(meta).toEqual({
          machine,
          uid: '1000',
          argv1: '/platform',
          argv2: expect.stringMatching(/^\/cnb\/scratch\/packfarm-detect-[^/]+\/test_arch@0\.1\.plan\.toml$/),
          pwd: '/workspace',
          bpdir: '/cnb/buildpacks/test_arch/0.1',
          platform: '/platform',
          canary: 'unset',
        });

        await build({
          appDir: ws.app,
          layersDir: ws.layers,
          platformDir: ws.platform,
          buildpacksDir,
          group: { group: detected.group },
          plan: detected.plan,
          target: detected.target,
          executor: exec,
        });
        const facts = join(ws.layers, 'test_arch', 'facts');
        const read = async (f: string) => (await readFile(join(facts, f), 'utf8')).trim();
        expect(await read('machine')).toBe(machine);
        expect(await read('uid')).toBe('1000');
        expect(await read('gid')).toBe('1000');
        expect(await read('pwd')).toBe('/workspace');
        expect(await read('args')).toMatch(
          /^\/layers\/test_arch \/platform \/cnb\/scratch\/packfarm-plan-test_arch-[^/]+\/test_arch\/plan\.toml$/,
        );
        expect(await read('bpdir')).toBe('readonly');
        expect(await read('plan')).toContain(`machine = "${machine}"`);
        const env = Object.fromEntries(
          (await read('env'))
            .split('\n')
            .map((l) => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
        );
        expect(env.PACKFARM_CANARY).toBeUndefined();
        expect(env.CNB_REGISTRY_AUTH).toBeUndefined();
        expect(await read('env')).not.toContain('c2VjcmV0');
        // Only the allowlisted part of the build image's Env (as the reference lifecycle passes its own env).
        expect(env.IMAGE_ONLY).toBeUndefined();
        expect(env.PATH).toBe('/usr/local/bin:/usr/bin:/bin');
        expect(env.HOME).toBe('/home/cnb');
        expect(env.CNB_LAYERS_DIR).toBe('/layers/test_arch');
        expect(env.CNB_PLATFORM_DIR).toBe('/platform');
        expect(env.CNB_BUILDPACK_DIR).toBe('/cnb/buildpacks/test_arch/0.1');
        expect(env.CNB_TARGET_ARCH).toBe(arch);
        // Files the buildpack created belong to the CNB user, on the host too.
        for (const p of [facts, join(facts, 'machine'), join(ws.app, 'built-by-buildpack')]) {
          const st = await stat(p);
          expect([st.uid, st.gid], p).toEqual([1000, 1000]);
        }
        const launch = await readFile(join(ws.layers, 'test_arch', 'launch.toml'), 'utf8');
        expect(launch).toContain('/layers/test_arch/facts/machine');
      } finally {
        delete process.env.PACKFARM_CANARY;
        delete process.env.CNB_REGISTRY_AUTH;
      }
    });
  }

  it('passes stdin, streams output, reports exit status; a timeout kills the container', async () => {
    const { exec } = await executorFor({ os: 'linux', architecture: 'amd64' }, { killGraceMs: 300 });
    const chunks: string[] = [];
    const r = await exec.run({
      argv: ['/bin/sh', '-c', 'cat; echo err >&2; exit 7'],
      cwd: '/workspace',
      env: { PATH: '/bin' },
      stdin: 'hello',
      onStdout: (c) => chunks.push(c.toString()),
      capture: true,
    });
    expect(r.exitCode).toBe(7);
    expect(chunks.join('')).toBe('hello');
    expect(r.stderr).toBe('err\n');

    // A process that handles SIGTERM ends on it…
    const t = await sh(exec, 'trap "exit 143" TERM; sleep 30 & wait', { timeoutMs: 300 });
    expect(t).toMatchObject({ timedOut: true, signal: 'SIGTERM', exitCode: 143 });
    // …one that ignores it (PID 1 without a handler) is killed after the grace period.
    const k = await sh(exec, 'exec sleep 30', { timeoutMs: 300 });
    expect(k).toMatchObject({ timedOut: true, signal: 'SIGKILL', exitCode: 137 });
    // Abort works the same way.
    const ac = new AbortController();
    const pending = exec.run({
      argv: ['/bin/sh', '-c', 'trap "exit 143" TERM; echo started; sleep 30 & wait'],
      cwd: '/workspace',
      env: { PATH: '/bin' },
      onStdout: () => ac.abort(),
      signal: ac.signal,
    });
    expect(await pending).toMatchObject({ aborted: true, signal: 'SIGTERM', exitCode: 143 });
    // Processes run side by side (detect runs a group's buildpacks at once), each in its own container.
    const many = await Promise.all([1, 2, 3, 4].map((i) => sh(exec, `echo ${i} $$`)));
    expect(many.map((m) => m.stdout)).toEqual(['1 1\n', '2 1\n', '3 1\n', '4 1\n']);
    // Nothing is left running in the executor's runtime state.
    const state = join(exec.hostPaths.scratch, '..', 'runc');
    const list = execFileSync('/usr/sbin/runc', ['--root', state, 'list', '-q'], { encoding: 'utf8' });
    expect(list.trim()).toBe('');
  });

  it('the root filesystem is read-only, /tmp is writable, the network can be turned off', async () => {
    const { exec } = await executorFor({ os: 'linux', architecture: 'amd64' }, { network: false });
    const r = await sh(
      exec,
      'touch /etc/x 2>/dev/null && echo rootfs-writable; touch /tmp/x && echo tmp-ok; ls /sys/class/net',
    );
    expect(r.stdout).toBe('tmp-ok\nlo\n');
    const { exec: online } = await executorFor({ os: 'linux', architecture: 'amd64' });
    const hostIfaces = (await readdir('/sys/class/net')).sort();
    const o = await sh(online, 'ls /sys/class/net; cat /etc/resolv.conf');
    const resolv = await readFile('/etc/resolv.conf', 'utf8');
    expect(o.stdout).toBe(`${hostIfaces.join('\n')}\n${resolv}`);
  });

  it('a missing executable is a PackfarmError; a missing runtime names what to install', async () => {
    const { exec, rootfs, ws } = await executorFor({ os: 'linux', architecture: 'amd64' });
    const err = await exec
      .run({ argv: ['/cnb/buildpacks/nope/bin/detect'], cwd: '/workspace', env: {} })
      .catch((e) => e);
    expect(isPackfarmError(err, 'EXEC_FAILED')).toBe(true);
    expect(err.message).toMatch(/nope\/bin\/detect: no such file/);
    // An interpreter the build image lacks: the runtime's own report becomes the same clear error.
    await mkdir(join(buildpacksDir, 'badinterp', 'bin'), { recursive: true });
    await writeFile(join(buildpacksDir, 'badinterp', 'bin', 'detect'), '#!/nonexistent/sh\nexit 0\n', {
      mode: 0o755,
    });
    const interp = await exec
      .run({ argv: ['/cnb/buildpacks/badinterp/bin/detect'], cwd: '/workspace', env: {} })
      .catch((e) => e);
    expect(isPackfarmError(interp, 'EXEC_FAILED')).toBe(true);
    expect(interp.message).toMatch(/badinterp\/bin\/detect: its interpreter \(#! line\)/);
    // A binary of an architecture nothing here runs or emulates (an ELF header for IA-64, machine 50).
    const elf = Buffer.alloc(64);
    elf.write('\x7fELF', 'latin1');
    elf.set([2, 1, 1], 4);
    elf.writeUInt16LE(2, 16);
    elf.writeUInt16LE(50, 18);
    await writeFile(join(buildpacksDir, 'badinterp', 'bin', 'ia64'), elf, { mode: 0o755 });
    const foreignBin = await exec
      .run({ argv: ['/cnb/buildpacks/badinterp/bin/ia64'], cwd: '/workspace', env: {} })
      .catch((e) => e);
    expect(isPackfarmError(foreignBin, 'EXEC_FAILED')).toBe(true);
    expect(foreignBin.message).toMatch(
      /exec format error: it is an ELF binary for machine 50 \(64-bit, little-endian\)/,
    );

    const missing = await createOciExecutor({
      rootfs: rootfs.dir,
      dirs: { ...ws, buildpacks: buildpacksDir },
      uid: 1000,
      gid: 1000,
      env: {},
      runtime: join(root, 'no-such-runc'),
    }).catch((e) => e);
    expect(isPackfarmError(missing, 'RUNC_MISSING')).toBe(true);
    expect(missing.message).toContain('no-such-runc');
    expect(missing.hint).toMatch(/apt-get install runc/);

    const base = {
      rootfs: rootfs.dir,
      dirs: { ...ws, buildpacks: buildpacksDir },
      uid: 1000,
      gid: 1000,
      env: {},
    };
    const uid = vi.spyOn(process, 'getuid').mockReturnValue(1000);
    try {
      const notRoot = await createOciExecutor(base).catch((e) => e);
      expect(isPackfarmError(notRoot, 'OCI_NEEDS_ROOT')).toBe(true);
      expect(notRoot.hint).toMatch(/--executor host/);
    } finally {
      uid.mockRestore();
    }
    const foreign = await createOciExecutor({
      ...base,
      platform: { os: 'linux', architecture: 'sparc64' },
    }).catch((e) => e);
    expect(isPackfarmError(foreign, 'PLATFORM_NOT_RUNNABLE')).toBe(true);
    expect(foreign.message).toMatch(/cannot run linux\/sparc64/);
    expect(foreign.hint).toMatch(/packfarm node setup-emulation/);
  });
});

describe('the creator with the oci executor', () => {
  it('builds a linux/arm64 image whose buildpack ran emulated; podman runs its process and prints aarch64', async () => {
    const platform = { os: 'linux', architecture: 'arm64' };
    const { store, digest } = await buildImage(platform);
    const ws = await workspace();
    const exec = await createBuildImageExecutor({
      store,
      image: digest,
      platform,
      dataDir,
      dirs: { ...ws, buildpacks: buildpacksDir },
    });
    executors.push(exec);
    const out = await openLayoutStore(join(root, 'app-layout'), { create: true });
    const result = await create({
      appDir: ws.app,
      layersDir: ws.layers,
      platformDir: ws.platform,
      buildpacks: createBuildpackStore(buildpacksDir),
      order: [{ group: [{ ...bp, optional: false }] }],
      runImage: { store, target: digest },
      outputs: [{ store: out, tags: ['app'] }],
      platform,
      platformApi: '0.15',
      uid: exec.user.uid,
      gid: exec.user.gid,
      executor: exec,
    });
    expect(result.detected.target.arch).toBe('arm64');
    const podman = await createPodmanRunner();
    try {
      const r = await podman.run(`oci:${join(root, 'app-layout')}:app`, { flags: ['--arch', 'arm64'] });
      expect(r.stderr).toBe('');
      expect(r.stdout.trim()).toBe('aarch64');
      expect(r.exitCode).toBe(0);
    } finally {
      await podman.cleanup();
    }
  });
});

describe('build image root filesystem', () => {
  it('is unpacked once per manifest digest (whiteouts applied) and reused, also when asked concurrently', async () => {
    const store = await openLayoutStore(join(root, 'layout-layers'), { create: true });
    const img = await writeTestImage(store, {
      layers: [
        { 'etc/passwd': 'cnb:x:1001:1002:cnb:/home/cnb:/bin/sh\n', 'old/gone.txt': 'x', 'keep.txt': 'k' },
        { 'old/.wh.gone.txt': '', 'new.txt': 'n' },
      ],
      tag: 'two',
      env: ['PATH=/bin', 'CNB_USER_ID=1001', 'CNB_GROUP_ID=1002'],
    });
    const dd = join(root, 'data-rootfs');
    const [a, b] = await Promise.all([
      prepareBuildImageRootfs({ store, image: img.digest, dataDir: dd }),
      prepareBuildImageRootfs({ store, image: img.digest, dataDir: dd }),
    ]);
    expect(a.dir).toBe(b.dir);
    expect([a.unpacked, b.unpacked].filter(Boolean)).toHaveLength(1);
    expect(a.dir).toBe(join(dd, 'rootfs', `sha256-${img.digest.slice(7)}`, 'rootfs'));
    expect((await readdir(a.dir)).sort()).toEqual(
      [
        'cnb',
        'dev',
        'etc',
        'keep.txt',
        'layers',
        'new.txt',
        'old',
        'platform',
        'proc',
        'sys',
        'tmp',
        'workspace',
      ].sort(),
    );
    expect(await readdir(join(a.dir, 'old'))).toEqual([]);
    expect(a.config).toMatchObject({ uid: 1001, gid: 1002, env: { PATH: '/bin', HOME: '/home/cnb' } });
    // Reuse needs no store: a store that fails every read still gets the unpacked tree.
    const broken = { ...store, getManifest: () => Promise.reject(new Error('no store access expected')) };
    const again = await prepareBuildImageRootfs({
      store: broken as ImageStore,
      image: img.digest,
      dataDir: dd,
    });
    expect(again).toMatchObject({ dir: a.dir, unpacked: false });
    expect((await readdir(join(dd, 'rootfs'))).filter((n) => !n.endsWith('.lock'))).toEqual([
      `sha256-${img.digest.slice(7)}`,
    ]);
  });
});
