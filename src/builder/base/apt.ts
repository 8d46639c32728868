import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, readdir, rename, rm, stat, utimes, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { withFileLock } from '../../util/lock.js';
import { PackfarmError } from '../../util/errors.js';
import { pathExists } from '../../util/fs.js';
import type { BaseArch, DebianRelease } from './definition.js';

const run = promisify(execFile);

/**
 * Dependency resolution and downloads through the system's apt, for any architecture, without touching the
 * machine's own apt state and without a container engine.
 *
 * Each (release, architecture) pair gets a private apt tree under `<data dir>/base/apt/<codename>-<arch>/`: its
 * own sources.list (the Debian archive, signed-by the archive keyring), package lists, an EMPTY dpkg status
 * file (so apt resolves as for a fresh root filesystem: every dependency is installed, nothing is assumed
 * present) and a configuration file given through APT_CONFIG, so the host's /etc/apt (its sources, pins,
 * architectures) is never read. `APT::Architecture` and `APT::Architectures` are both the target
 * architecture, so apt resolves for it alone (foreign `Multi-Arch` siblings never join).
 *
 * 1. `apt-get update` fills the private lists (again when they are older than LISTS_MAX_AGE_MS), under a lock.
 * 2. `apt-get install --simulate --no-install-recommends PKG…` resolves: its `Inst NAME (VERSION … [ARCH])`
 *    lines are exactly the packages a real install would unpack. "Unable to locate package" and unmet
 *    dependencies become PackfarmErrors naming the package and the architecture.
 * 3. `apt-get download NAME=VERSION…` fetches the missing .debs into a temp dir; apt checks each against the
 *    SHA256 in the signed index, then each is renamed into the cache `<data dir>/base/debs/<arch>/`
 *    as NAME_VERSION_ARCH.deb (apt's own file name, ':' written %3a). Cached files are reused.
 */

const UPDATE_ATTEMPTS = 3;
const UPDATE_RETRY_DELAY_MS = 5000;

/** Package lists older than this are refreshed (Debian stable's archive changes at most a few times a day). */
export const LISTS_MAX_AGE_MS = 6 * 60 * 60 * 1000;

export interface AptTarget {
  release: DebianRelease;
  arch: BaseArch;
  mirror: string;
  securityMirror: string;
  /** The packfarm data dir (its base/ subdir holds the apt trees and the .deb cache). */
  dataDir: string;
}

export interface ResolvedPackage {
  name: string;
  version: string;
  /** The package's own architecture: the target's, or `all`. */
  arch: string;
}

export interface AptEvents {
  onProgress?: (message: string) => void;
  /** Something the user must know about the result (e.g. a suite that could not be read). */
  onWarning?: (message: string) => void;
}

/** Part of every image (see resolvePackages). */
export const BASE_PACKAGES = ['base-files', 'base-passwd'] as const;

const KEYRING = '/usr/share/keyrings/debian-archive-keyring.gpg';

function aptDir(t: AptTarget): string {
  return join(t.dataDir, 'base', 'apt', `${t.release.codename}-${t.arch.debian}`);
}

export function debCacheDir(t: Pick<AptTarget, 'dataDir' | 'arch'>): string {
  return join(t.dataDir, 'base', 'debs', t.arch.debian);
}

/** The file name apt gives a .deb: NAME_VERSION_ARCH.deb with the epoch's ':' as %3a. */
export function debFileName(p: ResolvedPackage): string {
  return `${p.name}_${p.version.replace(/:/g, '%3a')}_${p.arch}.deb`;
}

async function prepareTree(t: AptTarget): Promise<{ dir: string; env: NodeJS.ProcessEnv }> {
  const dir = aptDir(t);
  for (const sub of [
    'lists/partial',
    'cache/archives/partial',
    'etc/apt.conf.d',
    'etc/preferences.d',
    'etc/sources.list.d',
  ])
    await mkdir(join(dir, sub), { recursive: true });
  const arch = t.arch.debian;
  const c = t.release.codename;
  const opts = `[arch=${arch} signed-by=${KEYRING}]`;
  const sources = [
    `deb ${opts} ${t.mirror} ${c} main`,
    `deb ${opts} ${t.mirror} ${c}-updates main`,
    `deb ${opts} ${t.securityMirror} ${c}-security main`,
  ].join('\n');
  await writeFile(join(dir, 'etc', 'sources.list'), `${sources}\n`);
  const statusFile = join(dir, 'status');
  if (!(await pathExists(statusFile))) await writeFile(statusFile, '');
  const q = (s: string) => JSON.stringify(s);
  const conf = [
    `Dir::Etc ${q(join(dir, 'etc'))};`,
    `Dir::Etc::main ${q(join(dir, 'etc', 'apt.conf'))};`,
    `Dir::Etc::Parts ${q(join(dir, 'etc', 'apt.conf.d'))};`,
    `Dir::Etc::SourceList ${q(join(dir, 'etc', 'sources.list'))};`,
    `Dir::Etc::SourceParts ${q(join(dir, 'etc', 'sources.list.d'))};`,
    `Dir::Etc::Preferences ${q(join(dir, 'etc', 'preferences'))};`,
    `Dir::Etc::PreferencesParts ${q(join(dir, 'etc', 'preferences.d'))};`,
    `Dir::State ${q(dir)};`,
    `Dir::State::Lists ${q(join(dir, 'lists'))};`,
    `Dir::State::status ${q(statusFile)};`,
    `Dir::Cache ${q(join(dir, 'cache'))};`,
    `APT::Architecture ${q(arch)};`,
    `APT::Architectures { ${q(arch)}; };`,
    'APT::Install-Recommends "false";',
    'APT::Install-Suggests "false";',
    // The lists and the download dir are ours alone (the lock below serialises packfarm processes); apt's
    // own lock files would need root.
    'Debug::NoLocking "true";',
    // As root apt hands downloads to the _apt user, who cannot write into a private data dir.
    'APT::Sandbox::User "root";',
    'Acquire::Languages "none";',
    'Acquire::Retries "3";',
  ].join('\n');
  await writeFile(join(dir, 'apt.conf'), `${conf}\n`);
  // LC_ALL=C: the output is parsed.
  const env = { ...process.env, APT_CONFIG: join(dir, 'apt.conf'), LC_ALL: 'C', LANGUAGE: 'C' };
  return { dir, env };
}

async function apt(
  tool: 'apt-get',
  args: string[],
  env: NodeJS.ProcessEnv,
  cwd?: string,
): Promise<{ stdout: string; stderr: string; code: number }> {
  try {
    const { stdout, stderr } = await run(tool, args, { env, maxBuffer: 64 << 20, ...(cwd ? { cwd } : {}) });
    return { stdout, stderr, code: 0 };
  } catch (err) {
    const e = err as NodeJS.ErrnoException & { stdout?: string; stderr?: string; code?: number | string };
    if (e.code === 'ENOENT')
      throw new PackfarmError(
        'APT_MISSING',
        `${tool} is not installed: base images are resolved with Debian's apt`,
        {
          hint: 'run packfarm base create on Debian or Ubuntu (apt and dpkg-deb are needed)',
        },
      );
    return { stdout: e.stdout ?? '', stderr: e.stderr ?? '', code: typeof e.code === 'number' ? e.code : 1 };
  }
}

/** Refresh the private package lists when missing or stale; serialised between processes. */
export async function updateLists(t: AptTarget, ev: AptEvents = {}, force = false): Promise<void> {
  const { dir, env } = await prepareTree(t);
  await withFileLock(
    join(dir, 'update.lock'),
    async () => {
      const stamp = join(dir, 'lists', '.packfarm-updated');
      const age = await stat(stamp).then(
        (s) => Date.now() - s.mtimeMs,
        () => Number.POSITIVE_INFINITY,
      );
      if (!force && age < LISTS_MAX_AGE_MS) {
        // Lists from an update that could not read every suite: say so every time they are used.
        const note = await readFile(stamp, 'utf8').catch(() => '');
        if (note.startsWith('incomplete:')) ev.onWarning?.(note.slice('incomplete:'.length).trim());
        return;
      }
      ev.onProgress?.(`apt-get update (debian ${t.release.codename}, ${t.arch.debian})`);
      // Debian's mirrors are briefly inconsistent while they sync ("File has unexpected size … Mirror sync in
      // progress?"); a later attempt usually gets a consistent set.
      let failure = '';
      for (let attempt = 1; attempt <= UPDATE_ATTEMPTS; attempt++) {
        const r = await apt('apt-get', ['-q', 'update'], env);
        const failed = r.code !== 0 || /^(E:|W: Failed to fetch)/m.test(r.stderr);
        if (!failed) {
          failure = '';
          break;
        }
        failure = aptErrors(r.stderr) || `exit ${r.code}`;
        if (attempt < UPDATE_ATTEMPTS) {
          ev.onProgress?.(`apt-get update failed (${failure}); trying again`);
          await new Promise((res) => setTimeout(res, UPDATE_RETRY_DELAY_MS * attempt));
        }
      }
      if (failure !== '') {
        const fetchErrors = failure.split('; ').filter((l) => l.startsWith('E: Failed to fetch'));
        const onlySecondary =
          fetchErrors.length > 0 && fetchErrors.every((l) => /-(security|updates)\//.test(l));
        const lists = await readdir(join(dir, 'lists')).catch(() => [] as string[]);
        const hasMain = lists.some((f) =>
          f.endsWith(`_dists_${t.release.codename}_main_binary-${t.arch.debian}_Packages`),
        );
        if (onlySecondary && hasMain) {
          // The release itself is there; only the security or updates suite is unreadable right now. Building
          // without it is better than not building, but it must be said loudly (base images are for shipping).
          const warning = `apt-get update: ${failure}; resolving WITHOUT the packages of the suites that failed (security or stable updates may be missing)`;
          ev.onWarning?.(warning);
          // Marked as fresh for ten minutes only, so the failed suites are tried again soon.
          await writeFile(stamp, `incomplete: ${warning}`);
          const soonStale = new Date(Date.now() - LISTS_MAX_AGE_MS + 10 * 60_000);
          await utimes(stamp, soonStale, soonStale);
          return;
        }
        if (Number.isFinite(age)) {
          // Lists from an earlier update are still there: resolve against them rather than fail.
          ev.onProgress?.(
            `apt-get update failed (${failure}); using the package lists from ${Math.round(age / 60000)} minutes ago`,
          );
          return;
        }
        throw new PackfarmError(
          'APT_UPDATE_FAILED',
          `apt-get update for debian ${t.release.codename} ${t.arch.debian} failed: ${failure}`,
          {
            hint: `check that ${t.mirror} is reachable (proxies: http_proxy); a "mirror sync" error passes within minutes`,
          },
        );
      }
      await writeFile(stamp, new Date().toISOString());
    },
    { timeoutMs: 10 * 60_000, staleMs: 10 * 60_000 },
  );
}

function aptErrors(stderr: string): string {
  return stderr
    .split('\n')
    .filter((l) => /^[EW]: /.test(l))
    .join('; ');
}

export interface ResolveOptions {
  packages: string[];
  /** Add every Essential: yes package (with usr-is-merged, so apt does not reach for usrmerge and perl). */
  essential: boolean;
  /** Names the file/field or flag the packages came from, for errors. */
  source: string;
}

/** The full package set a fresh install of `packages` unpacks, sorted by name. */
export async function resolvePackages(t: AptTarget, opts: ResolveOptions): Promise<ResolvedPackage[]> {
  const { env } = await prepareTree(t);
  // Every image gets Debian's root skeleton (/etc/os-release, /etc/profile …) and its system users and groups,
  // whatever it is asked for: Debian packages never declare a dependency on these, they assume them.
  const wanted = [...BASE_PACKAGES, ...opts.packages];
  // The root filesystem is merged-/usr (see rootfs.ts); saying so keeps init-system-helpers from pulling
  // usrmerge, which converts a split-/usr system and drags perl in.
  if (opts.essential) wanted.push('?essential', 'usr-is-merged');
  const r = await apt('apt-get', ['install', '--simulate', '-q', '--no-install-recommends', ...wanted], env);
  if (r.code !== 0) {
    const missing = [...r.stderr.matchAll(/^E: Unable to locate package (\S+)/gm)].map((m) => m[1]);
    const noCandidate = [...r.stderr.matchAll(/^E: Package '([^']+)' has no installation candidate/gm)].map(
      (m) => m[1],
    );
    const absent = [...missing, ...noCandidate];
    if (absent.length > 0)
      throw new PackfarmError(
        'PACKAGE_NOT_FOUND',
        `${opts.source}: debian ${t.release.codename} has no package ${absent.map((p) => `"${p}"`).join(', ')} for ${t.arch.debian}`,
        {
          hint: `check the name with: apt-cache policy NAME (packages.debian.org lists what exists for each architecture)`,
        },
      );
    const unmet = r.stdout
      .split('\n')
      .filter((l) => / Depends: | PreDepends: |^ +\S+ : /.test(l))
      .map((l) => l.trim())
      .join('; ');
    throw new PackfarmError(
      'PACKAGE_UNRESOLVABLE',
      `${opts.source}: apt cannot install ${opts.packages.join(', ')} on debian ${t.release.codename} ${t.arch.debian}: ${unmet || aptErrors(r.stderr) || `exit ${r.code}`}`,
      {
        hint: 'some package or one of its dependencies is not built for this architecture; drop it or the architecture',
      },
    );
  }
  const out: ResolvedPackage[] = [];
  for (const m of r.stdout.matchAll(/^Inst (\S+) \((\S+) .*\[(\S+)\]\)/gm))
    out.push({ name: m[1]!, version: m[2]!, arch: m[3]! });
  if (out.length === 0)
    throw new PackfarmError('PACKAGE_UNRESOLVABLE', `${opts.source}: apt resolved no packages to install`, {
      hint: 'the apt output had no Inst lines; is this apt too old (apt 2.x is needed)?',
    });
  return out.sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
}

/** The cached .deb of each package (downloaded first when missing). */
export async function downloadPackages(
  t: AptTarget,
  pkgs: readonly ResolvedPackage[],
  ev: AptEvents = {},
): Promise<Map<string, string>> {
  const { env } = await prepareTree(t);
  const cache = debCacheDir(t);
  await mkdir(cache, { recursive: true });
  const paths = new Map<string, string>();
  const missing: ResolvedPackage[] = [];
  for (const p of pkgs) {
    const file = join(cache, debFileName(p));
    paths.set(p.name, file);
    if (!(await pathExists(file))) missing.push(p);
  }
  if (missing.length === 0) return paths;
  ev.onProgress?.(`downloading ${missing.length} of ${pkgs.length} packages for ${t.arch.debian}`);
  // A temp dir in the cache dir: same filesystem, so each verified file is renamed into place atomically and
  // concurrent runs never see half a .deb.
  const tmp = await mkdtemp(join(cache, '.download-'));
  try {
    const r = await apt(
      'apt-get',
      ['-q', 'download', ...missing.map((p) => `${p.name}=${p.version}`)],
      env,
      tmp,
    );
    if (r.code !== 0)
      throw new PackfarmError(
        'PACKAGE_DOWNLOAD_FAILED',
        `apt-get download for debian ${t.release.codename} ${t.arch.debian} failed: ${aptErrors(r.stderr) || `exit ${r.code}`}`,
        { hint: `check that ${t.mirror} is reachable` },
      );
    const got = new Set(await readdir(tmp));
    for (const p of missing) {
      const name = debFileName(p);
      if (!got.has(name))
        throw new PackfarmError('PACKAGE_DOWNLOAD_FAILED', `apt-get download did not produce ${name}`, {
          hint: 'the package lists may have changed meanwhile; run the command again',
        });
      await rename(join(tmp, name), join(cache, name));
    }
  } finally {
    await rm(tmp, { recursive: true, force: true });
  }
  return paths;
}
