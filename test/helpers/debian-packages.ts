import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdir, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { withFileLock } from '../../src/image/lock.js';

/**
 * Debian packages of any architecture, for building test root filesystems and build images of foreign
 * platforms: `apt-get download` with a private apt state per architecture (its own package lists, cache and
 * an empty dpkg status, so the machine's apt state is never touched), unpacked with `dpkg-deb -x`. Everything
 * lives under `<OS temp>/packfarm-debian-packages/` and is reused by later test runs; a lock keeps parallel
 * test files from fetching the same thing twice.
 */

const execFileP = promisify(execFile);

/** Debian's architecture names for OCI ones. */
export const DEBIAN_ARCH: Readonly<Record<string, string>> = {
  amd64: 'amd64',
  arm64: 'arm64',
  ppc64le: 'ppc64el',
  s390x: 's390x',
  arm: 'armhf',
  '386': 'i386',
};

export function debianPackagesCacheDir(): string {
  return join(process.env.PACKFARM_TEST_DEB_CACHE ?? tmpdir(), 'packfarm-debian-packages');
}

/** How old the package lists may be before `apt-get update` runs again. */
const LISTS_MAX_AGE_MS = 24 * 60 * 60_000;

/**
 * Download `pkg` for the OCI architecture `arch` and unpack it; returns the dir it was unpacked into
 * (`<cache>/<debian arch>/<pkg>/root`). A second call returns the same dir without network access.
 */
export async function debianPackage(pkg: string, arch: string): Promise<string> {
  const debArch = DEBIAN_ARCH[arch];
  if (!debArch) throw new Error(`no Debian architecture for ${arch}`);
  if (!existsSync('/usr/bin/apt-get') || !existsSync('/usr/bin/dpkg-deb'))
    throw new Error('debian packages for tests need apt-get and dpkg-deb (a Debian or Ubuntu machine)');
  const base = join(debianPackagesCacheDir(), debArch);
  const root = join(base, pkg, 'root');
  if (existsSync(root)) return root;
  await mkdir(base, { recursive: true });
  return withFileLock(
    join(base, '.lock'),
    async () => {
      if (existsSync(root)) return root;
      const apt = await aptState(base, debArch);
      const work = join(base, pkg, `.tmp-${process.pid}-${randomBytes(4).toString('hex')}`);
      await mkdir(work, { recursive: true });
      try {
        await execFileP('apt-get', [...apt, 'download', pkg], { cwd: work });
        const deb = (await readdir(work)).find((f) => f.endsWith('.deb'));
        if (!deb) throw new Error(`apt-get download ${pkg} (${debArch}) left no .deb in ${work}`);
        await execFileP('dpkg-deb', ['-x', join(work, deb), join(work, 'root')]);
        await rename(join(work, 'root'), root);
      } finally {
        await rm(work, { recursive: true, force: true });
      }
      return root;
    },
    { timeoutMs: 10 * 60_000, staleMs: 60 * 60_000 },
  );
}

/** apt-get options for a private state of one architecture; runs `update` when the lists are missing or old. */
async function aptState(base: string, debArch: string): Promise<string[]> {
  const lists = join(base, 'apt', 'lists');
  const cache = join(base, 'apt', 'cache');
  const status = join(base, 'apt', 'status');
  await mkdir(join(lists, 'partial'), { recursive: true });
  await mkdir(join(cache, 'archives', 'partial'), { recursive: true });
  if (!existsSync(status)) await writeFile(status, '');
  const opts = [
    '-q',
    '-o',
    `APT::Architecture=${debArch}`,
    '-o',
    `APT::Architectures=${debArch}`,
    '-o',
    `Dir::State::Lists=${lists}`,
    '-o',
    `Dir::State::Status=${status}`,
    '-o',
    `Dir::Cache=${cache}`,
    '-o',
    'Debug::NoLocking=1',
    // Our private dirs belong to the caller; apt's _apt sandbox user could not write them.
    '-o',
    'APT::Sandbox::User=root',
  ];
  const stamp = join(base, 'apt', 'updated');
  const fresh = await stat(stamp).then(
    (s) => Date.now() - s.mtimeMs < LISTS_MAX_AGE_MS,
    () => false,
  );
  if (!fresh) {
    await execFileP('apt-get', [...opts, 'update'], { maxBuffer: 16 * 1024 * 1024 });
    await writeFile(stamp, new Date().toISOString());
  }
  return opts;
}

/** A statically linked busybox for `arch` (Debian's busybox-static): the path of the binary. */
export async function busyboxFor(arch: string): Promise<string> {
  const root = await debianPackage('busybox-static', arch);
  return join(root, 'bin', 'busybox');
}
