import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createBaseImages } from '../../src/builder/base/create.js';
import { loadBaseDefinition } from '../../src/builder/base/definition.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { type PodmanRunner, createPodmanRunner } from '../helpers/run-image.js';

/**
 * `packfarm base create` against the real Debian archive: amd64, arm64 and s390x build and run images from a
 * few packages, into a registry and an OCI layout, read back by skopeo and umoci and run by podman (arm64 and
 * s390x through qemu binfmt). The package lists and .debs are cached in a fixed dir under the temp dir, so
 * reruns download nothing.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const CACHE_HOME = join(tmpdir(), 'packfarm-test-base-cache');
const BUILD_PACKAGES = 'dash,coreutils,mawk';
const RUN_PACKAGES = 'dash,coreutils';

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;

function packfarm(args: string[]) {
  return execa(process.execPath, [join(repoRoot, 'bin', 'packfarm.js'), ...args], {
    env: { PACKFARM_HOME: CACHE_HOME, NO_COLOR: '1' },
    reject: false,
  });
}

async function skopeoJson(...args: string[]): Promise<Record<string, unknown>> {
  const r = await execa('skopeo', [...args], { reject: false });
  if (r.exitCode !== 0) throw new Error(`skopeo ${args.join(' ')}: ${r.stderr}`);
  return JSON.parse(r.stdout) as Record<string, unknown>;
}

beforeAll(async () => {
  const binfmt = await execa(
    process.execPath,
    [join(repoRoot, 'scripts', 'ensure-binfmt.mjs'), 'arm64', 's390x'],
    {
      reject: false,
    },
  );
  if (binfmt.exitCode !== 0)
    throw new Error(`qemu binfmt_misc for arm64 and s390x is needed: ${binfmt.stderr}`);
  root = await mkdtemp(join(tmpdir(), 'pf-base-'));
  registry = await startRegistry({ proxy: false });
  podman = await createPodmanRunner();
});

afterAll(async () => {
  await podman?.cleanup();
  await registry?.stop();
  await rm(root, { recursive: true, force: true });
});

describe('packfarm base create', () => {
  let first: { build: string; run: string };

  it('builds amd64, arm64 and s390x build and run images from flags, as indexes in a registry and a layout', async () => {
    const r = await packfarm([
      'base',
      'create',
      '--arch',
      'amd64,s390x,arm64',
      '--packages',
      BUILD_PACKAGES,
      '--run-packages',
      RUN_PACKAGES,
      '--essential',
      'none',
      '--build-tag',
      `${registry.host}/base/build:12`,
      '--run-tag',
      `oci:${root}/run:12`,
      '--insecure-registry',
      registry.host,
      '--json',
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    const result = JSON.parse(r.stdout) as { build: { digest: string }; run: { digest: string } };
    first = { build: result.build.digest, run: result.run.digest };

    for (const ref of [`docker://${registry.host}/base/build:12`, `oci:${root}/run:12`]) {
      const index = await skopeoJson('inspect', '--raw', '--tls-verify=false', ref);
      expect(index.mediaType).toBe('application/vnd.oci.image.index.v1+json');
      const children = index.manifests as { platform: Record<string, string> }[];
      expect(children.map((c) => c.platform)).toEqual([
        { architecture: 'amd64', os: 'linux' },
        { architecture: 'arm64', os: 'linux' },
        { architecture: 's390x', os: 'linux' },
      ]);
    }
    const buildCfg = await skopeoJson(
      'inspect',
      '--config',
      '--tls-verify=false',
      '--override-arch',
      'arm64',
      `docker://${registry.host}/base/build:12`,
    );
    expect(buildCfg.architecture).toBe('arm64');
    expect(buildCfg.os).toBe('linux');
    expect(buildCfg.variant).toBeUndefined();
    const config = buildCfg.config as { Env: string[]; User: string; Labels: Record<string, string> };
    expect(config.Env).toEqual(
      expect.arrayContaining([expect.stringMatching(/^PATH=/), 'CNB_USER_ID=1001', 'CNB_GROUP_ID=1000']),
    );
    expect(config.User).toBe('1001:1000');
    expect(config.Labels).toEqual({
      'io.buildpacks.base.distro.name': 'debian',
      'io.buildpacks.base.distro.version': '12',
      'io.buildpacks.base.id': 'io.packfarm.debian-12',
      'io.buildpacks.stack.id': 'io.packfarm.debian-12',
    });
    const runCfg = await skopeoJson('inspect', '--config', '--override-arch', 'amd64', `oci:${root}/run:12`);
    const run = runCfg.config as { Env: string[]; User: string };
    expect(run.User).toBe('1002:1000');
    expect(run.Env.some((e) => e.startsWith('CNB_USER_ID='))).toBe(false);
    // umoci reads the layout too (it validates the layout and its blobs).
    const umoci = await execa('umoci', ['ls', '--layout', join(root, 'run')], { reject: false });
    expect(umoci.exitCode, umoci.stderr).toBe(0);
    expect(umoci.stdout).toContain('12');
  });

  it('runs each architecture with podman: the run image has /bin/sh, the cnb user and the right machine', async () => {
    // The run image copied to the registry (podman pulls a chosen architecture of an index from there).
    const copy = await execa('skopeo', [
      'copy',
      '--all',
      '--dest-tls-verify=false',
      `oci:${root}/run:12`,
      `docker://${registry.host}/base/run:12`,
    ]);
    expect(copy.exitCode).toBe(0);
    for (const [arch, machine] of [
      ['amd64', 'x86_64'],
      ['arm64', 'aarch64'],
      ['s390x', 's390x'],
    ] as const) {
      const r = await podman.run(`${registry.host}/base/run:12`, {
        flags: ['--arch', arch, '--tls-verify=false'],
        args: ['sh', '-c', 'uname -m; id -un; echo $HOME; test -w $HOME && echo writable; readlink /bin'],
      });
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout.split('\n')).toEqual([machine, 'cnb', '/home/cnb', 'writable', 'usr/bin']);
    }
    // The build image: the awk alternative mawk's postinst would make, dpkg's database, the CNB env.
    const b = await podman.run(`${registry.host}/base/build:12`, {
      flags: ['--arch', 'arm64', '--tls-verify=false'],
      args: [
        'sh',
        '-c',
        // biome-ignore lint/suspicious/noTemplateCurlyInString: a dpkg-query format, not a JS template
        'uname -m; echo $CNB_USER_ID:$CNB_GROUP_ID; awk "BEGIN { print 6 * 7 }"; dpkg-query -W -f "\\${Status}\\n" mawk; tail -n 1 /etc/shells',
      ],
    });
    expect(b.exitCode, b.stderr).toBe(0);
    const lines = b.stdout.split('\n');
    expect(lines).toEqual(['aarch64', '1001:1000', '42', 'install ok installed', '/usr/bin/dash']);
  });

  it('is reproducible: the same packages from a base.toml give the same digests in the other stores', async () => {
    const file = join(root, 'base.toml');
    await writeFile(
      file,
      [
        'distro = "debian:12"',
        'architectures = ["s390x", "arm64", "amd64"]',
        '[build]',
        `packages = ${JSON.stringify(BUILD_PACKAGES.split(',').reverse())}`,
        'essential = false',
        '[run]',
        `packages = ${JSON.stringify(RUN_PACKAGES.split(','))}`,
        '',
      ].join('\n'),
    );
    const progress: string[] = [];
    const result = await createBaseImages({
      definition: await loadBaseDefinition(file),
      buildTag: `oci:${root}/build2:12`,
      runTag: `${registry.host}/base/run2:12`,
      insecureRegistries: [registry.host],
      dataDir: CACHE_HOME,
      onEvent: (e) => {
        if (e.type === 'progress') progress.push(e.message);
      },
    });
    expect(result.build.digest).toBe(first.build);
    expect(result.run.digest).toBe(first.run);
    // Everything came from the .deb cache the first run filled.
    expect(progress.filter((m) => m.startsWith('downloading'))).toEqual([]);
  });
});

describe('packfarm base create: bad input', () => {
  it('names the architecture when a package does not exist for it', async () => {
    const r = await packfarm([
      'base',
      'create',
      '--arch',
      'arm64',
      '--packages',
      'dash',
      '--run-packages',
      'libc6-i386',
      '--essential',
      'none',
      '--build-tag',
      `oci:${root}/bad:1`,
      '--run-tag',
      `oci:${root}/bad-run:1`,
    ]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('run packages: debian bookworm has no package "libc6-i386" for arm64');
  });

  it('refuses an unknown architecture', async () => {
    const r = await packfarm([
      'base',
      'create',
      '--arch',
      'amd64,sparc',
      '--packages',
      'dash',
      '--run-packages',
      'dash',
    ]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain('--arch: "sparc" is not an architecture');
  });

  it('names the file and the field of a malformed base.toml', async () => {
    const file = join(root, 'broken.toml');
    await writeFile(file, 'distro = "debian:12"\n[run]\npackages = "dash"\n');
    let r = await packfarm(['base', 'create', file]);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toContain(`${file}: invalid content: run.packages:`);
    await writeFile(file, 'distro = "debian:12"\n[build]\npakages = ["dash"]\n');
    r = await packfarm(['base', 'create', file]);
    expect(r.stderr).toMatch(new RegExp(`${file}: invalid content: build: .*pakages`));
    await writeFile(file, 'distro = "debian:99"\n');
    r = await packfarm(['base', 'create', file]);
    expect(r.stderr).toContain(`${file}: distro: "debian:99" is not a distribution`);
  });
});
