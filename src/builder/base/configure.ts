import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { compareEntryNames } from '../../archive/index.js';
import { type FsNode, type InstalledPackage, type Rootfs, mergedUsrPath, setNode } from './rootfs.js';

/**
 * What the packages' maintainer scripts would have done on a fresh install, done without running them (they
 * are foreign-architecture programs, and need a chroot and root). Each handler reproduces one script's effect
 * for a fresh root filesystem; `configureRootfs` reports every package whose scripts do something no handler
 * covers, so the user knows what is missing.
 */

export interface CnbUser {
  userId: number;
  groupId: number;
  userName: string;
  groupName: string;
  home: string;
}

export interface ConfigureResult {
  /** Packages whose scripts were covered, and how (for the report). */
  handled: { package: string; how: string }[];
}

const GENERATED = 'packfarm';

function file(content: string | Buffer, mode = 0o644, uid = 0, gid = 0): FsNode {
  return { type: 'file', mode, uid, gid, content: Buffer.from(content), owner: GENERATED };
}
function dir(mode = 0o755, uid = 0, gid = 0): FsNode {
  return { type: 'dir', mode, uid, gid, owner: GENERATED };
}
function symlink(target: string): FsNode {
  return { type: 'symlink', mode: 0o777, uid: 0, gid: 0, linkname: target, owner: GENERATED };
}

/** A file of the table, resolved through symlinks (absolute ones from the root, merged-/usr applied). */
function lookup(fs: Rootfs, path: string, hops = 0): { path: string; node: FsNode } | undefined {
  const p = mergedUsrPath(path.replace(/^\/+/, ''));
  const node = fs.nodes.get(p);
  if (node?.type === 'symlink' && hops < 20) {
    const target = node.linkname ?? '';
    const next = target.startsWith('/') ? target : `${p.split('/').slice(0, -1).join('/')}/${target}`;
    return lookup(fs, normalisePath(next), hops + 1);
  }
  return node ? { path: p, node } : undefined;
}

function normalisePath(path: string): string {
  const out: string[] = [];
  for (const part of path.split('/')) {
    if (part === '' || part === '.') continue;
    if (part === '..') out.pop();
    else out.push(part);
  }
  return out.join('/');
}

export async function readNode(fs: Rootfs, path: string): Promise<Buffer | undefined> {
  const found = lookup(fs, path);
  if (!found) return undefined;
  let n = found.node;
  if (n.type === 'link') n = fs.nodes.get(n.linkname ?? '') ?? n;
  if (n.content) return n.content;
  if (n.source) return readFile(n.source.path);
  return undefined;
}

function has(fs: Rootfs, name: string): boolean {
  return fs.packages.some((p) => p.name === name);
}

export async function configureRootfs(fs: Rootfs, user: CnbUser): Promise<ConfigureResult> {
  const handled: ConfigureResult['handled'] = [];
  // Before any handler replaces a package file: dpkg records the sums of the conffiles as shipped.
  await md5Conffiles(fs);
  await writeUsers(fs, user);
  if (has(fs, 'base-passwd'))
    handled.push({ package: 'base-passwd', how: '/etc/passwd and /etc/group from its masters' });
  if (has(fs, 'base-files')) {
    await baseFiles(fs);
    handled.push({
      package: 'base-files',
      how: 'fresh-install files and directories (/root dotfiles, /etc/profile, /var/mail …)',
    });
  }
  if (has(fs, 'debianutils')) {
    await shells(fs);
    handled.push({ package: 'debianutils', how: '/etc/shells from shells.d' });
  }
  if (has(fs, 'dash')) {
    setNode(
      fs,
      'var/lib/dpkg/diversions',
      file(
        '/bin/sh\n/bin/sh.distrib\ndash\n/usr/share/man/man1/sh.1.gz\n/usr/share/man/man1/sh.distrib.1.gz\ndash\n',
      ),
    );
    handled.push({ package: 'dash', how: 'the package ships /bin/sh → dash; its diversion is recorded' });
  }
  const alternatives = writeAlternatives(fs);
  let caWarning: string | undefined;
  if (has(fs, 'ca-certificates')) {
    caWarning = await caCertificates(fs);
    handled.push({
      package: 'ca-certificates',
      how: '/etc/ca-certificates.conf, /etc/ssl/certs/*.pem and the ca-certificates.crt bundle',
    });
  }
  writeDpkgDatabase(fs);

  const known = new Map<string, string | undefined>([
    ['base-passwd', undefined],
    ['base-files', undefined],
    ['debianutils', undefined],
    ['dash', undefined],
    ['ca-certificates', caWarning],
    // On a fresh install their scripts only act on upgrades (service restarts, old-file cleanups).
    ['libc6', undefined],
    // ldconfig: without /etc/ld.so.cache, Debian's ld.so still searches the multiarch library dirs.
    ['libc-bin', undefined],
    // Creates dpkg's database files: written above.
    ['dpkg', undefined],
    // Links /usr/bin/touch to /bin/touch on split-/usr systems; on merged-/usr it is the same file.
    ['coreutils', undefined],
    ['openssl', undefined],
  ]);
  if (has(fs, 'openssl') && !fs.nodes.has('usr/lib/ssl')) setNode(fs, 'usr/lib/ssl', symlink('/etc/ssl'));
  if (has(fs, 'tzdata')) {
    // The debconf default answer: UTC.
    setNode(fs, 'etc/localtime', symlink('/usr/share/zoneinfo/Etc/UTC'));
    setNode(fs, 'etc/timezone', file('Etc/UTC\n'));
    handled.push({ package: 'tzdata', how: '/etc/localtime → Etc/UTC (the debconf default)' });
    known.set('tzdata', undefined);
  }
  if (has(fs, 'bash')) {
    if (!fs.nodes.has('usr/bin/sh')) setNode(fs, 'usr/bin/sh', symlink('bash'));
    handled.push({
      package: 'bash',
      how: '/bin/sh → bash when no other package ships /bin/sh (its man-page alternative is left out)',
    });
    known.set('bash', undefined);
  }
  for (const [name, how] of [
    ['libc6', 'nothing to do on a fresh install'],
    ['libc-bin', 'no ld.so.cache: ld.so searches the multiarch dirs itself'],
    ['dpkg', 'its database is written (status, info/*.list)'],
    ['coreutils', 'nothing to do on merged-/usr'],
    ['openssl', '/usr/lib/ssl → /etc/ssl'],
  ] as const)
    if (has(fs, name)) handled.push({ package: name, how });
  for (const pkg of fs.packages) {
    const scripts = ['preinst', 'postinst'].filter((s) => pkg.control.members.has(s));
    if (scripts.length === 0) continue;
    if (known.has(pkg.name)) {
      const w = known.get(pkg.name);
      if (w) fs.warnings.push({ package: pkg.name, message: w });
      continue;
    }
    const leftover = scripts.filter((s) => !scriptCovered(pkg.control.members.get(s)!.toString('utf8')));
    const alts = alternatives.get(pkg.name);
    if (alts && alts.length > 0) handled.push({ package: pkg.name, how: `alternatives ${alts.join(', ')}` });
    if (leftover.length > 0)
      fs.warnings.push({
        package: pkg.name,
        message: `${leftover.join(' and ')} not run (maintainer scripts are not run); what ${leftover.length > 1 ? 'they do' : 'it does'} on install is missing from the image`,
      });
  }
  return { handled };
}

/** Debhelper sections packfarm reproduces (alternatives) or that do nothing in an image (services, debconf). */
const HARMLESS_DH =
  /^(dh_installalternatives|dh_installsystemd|dh_installsystemduser|dh_installinit|dh_installdeb|dh_installmenu|dh_installdebconf|dh_installtmpfiles)\b/;

/**
 * Lines of a maintainer script that do nothing on a fresh install, or nothing packfarm has not done: shell
 * structure, tests of the script's arguments, debconf loading, and update-alternatives calls (handled above).
 */
const STRUCTURE: RegExp[] = [
  /^set -e$/,
  /^exit 0$/,
  /^:$/,
  /^(fi|esac|done|else|then|;;|\{|\}|\))$/,
  /^case "?\$1"? in$/,
  /^\(?[a-z|-]+\)(\s*;;)?$/, // configure|abort-upgrade)
  /^\(?\*\)(\s*;;)?$/,
  /^(el)?if \[ "?\$[12]"? (=|!=) "?[a-z-]*"? \]( (&&|\|\|) \[ "?\$[12]"? (=|!=) "?[a-z-]*"? \])*;? ?(then)?$/,
  /^(el)?if test -z "\$2"(;)? ?(then)?$/,
  /^\. \/usr\/share\/debconf\/confmodule$/,
  /^[a-z_]+\(\) ?\{?$/, // a function definition line; its body lines are judged on their own
  /^update-alternatives (--quiet )?--(install|remove) [^$`]*$/,
  /^echo "[^"$`]*" >&2$/,
  /^exit 1$/,
];

/** Whether every line of a script is structure or something handled (judged line by line, continuations joined). */
export function scriptCovered(script: string): boolean {
  let inSection: boolean | undefined;
  for (const raw of script.replace(/\\\n/g, ' ').split('\n')) {
    const line = raw.trim().replace(/\s+/g, ' ');
    const start = /^# Automatically added by (\S+)/.exec(line);
    if (start) {
      inSection = HARMLESS_DH.test(start[1]!);
      continue;
    }
    if (line === '# End automatically added section') {
      inSection = undefined;
      continue;
    }
    if (inSection === true) continue;
    if (line === '' || line.startsWith('#')) continue;
    if (!STRUCTURE.some((re) => re.test(line))) return false;
  }
  return true;
}

async function writeUsers(fs: Rootfs, u: CnbUser): Promise<void> {
  const passwdMaster = await readNode(fs, 'usr/share/base-passwd/passwd.master');
  const groupMaster = await readNode(fs, 'usr/share/base-passwd/group.master');
  const shell = lookup(fs, 'bin/sh') ? '/bin/sh' : '/usr/sbin/nologin';
  let passwd =
    passwdMaster?.toString('utf8') ??
    `root:x:0:0:root:/root:${shell}\nnobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin\n`;
  let group = groupMaster?.toString('utf8') ?? 'root:x:0:\nnogroup:x:65534:\n';
  const groupByGid = group.split('\n').find((l) => l.split(':')[2] === String(u.groupId));
  if (!groupByGid) group += `${u.groupName}:x:${u.groupId}:\n`;
  if (!passwd.split('\n').some((l) => l.split(':')[2] === String(u.userId)))
    passwd += `${u.userName}:x:${u.userId}:${u.groupId}:${u.userName}:${u.home}:${shell}\n`;
  setNode(fs, 'etc/passwd', file(passwd));
  setNode(fs, 'etc/group', file(group));
  const home = u.home.replace(/^\/+/, '');
  setNode(fs, home, dir(0o750, u.userId, u.groupId));
  if (!fs.nodes.has('root')) setNode(fs, 'root', dir(0o700));
  if (!fs.nodes.has('tmp')) setNode(fs, 'tmp', dir(0o1777));
}

async function baseFiles(fs: Rootfs): Promise<void> {
  const copy = async (from: string, to: string) => {
    const c = await readNode(fs, `usr/share/base-files/${from}`);
    if (c && !fs.nodes.has(to)) setNode(fs, to, file(c));
  };
  await copy('dot.profile', 'root/.profile');
  await copy('dot.bashrc', 'root/.bashrc');
  await copy('profile', 'etc/profile');
  await copy('motd', 'etc/motd');
  if (fs.nodes.has('usr/share/info') && !fs.nodes.has('usr/share/info/dir'))
    await copy('info.dir', 'usr/share/info/dir');
  if (fs.nodes.has('etc/dpkg/origins/debian') && !fs.nodes.has('etc/dpkg/origins/default'))
    setNode(fs, 'etc/dpkg/origins/default', symlink('debian'));
  // base-passwd's fixed ids: mail is 8, utmp 43.
  for (const [path, mode, gid] of [
    ['mnt', 0o755, 0],
    ['srv', 0o755, 0],
    ['opt', 0o755, 0],
    ['etc/opt', 0o755, 0],
    ['var/opt', 0o755, 0],
    ['media', 0o755, 0],
    ['var/mail', 0o2775, 8],
    ['run/lock', 0o1777, 0],
  ] as const)
    if (!fs.nodes.has(path)) setNode(fs, path, dir(mode, 0, gid));
  if (!fs.nodes.has('var/spool/mail')) setNode(fs, 'var/spool/mail', symlink('../mail'));
  if (fs.nodes.get('var/run')?.type !== 'symlink') {
    fs.nodes.delete('var/run');
    setNode(fs, 'var/run', symlink('/run'));
  }
  if (fs.nodes.get('var/lock')?.type !== 'symlink') {
    fs.nodes.delete('var/lock');
    setNode(fs, 'var/lock', symlink('/run/lock'));
  }
  for (const d of ['', '/share', '/share/man', '/bin', '/games', '/lib', '/include', '/sbin', '/src', '/etc'])
    if (!fs.nodes.has(`usr/local${d}`)) setNode(fs, `usr/local${d}`, dir());
  if (!fs.nodes.has('usr/local/man')) setNode(fs, 'usr/local/man', symlink('share/man'));
  for (const [path, mode] of [
    ['var/log/wtmp', 0o664],
    ['var/log/btmp', 0o660],
    ['var/log/lastlog', 0o664],
  ] as const)
    if (!fs.nodes.has(path)) setNode(fs, path, file('', mode, 0, 43));
}

/** debianutils' update-shells: the default list plus every shells.d entry, with its /usr twin on merged-/usr. */
async function shells(fs: Rootfs): Promise<void> {
  const base =
    (await readNode(fs, 'usr/share/debianutils/shells'))?.toString('utf8') ??
    '# /etc/shells: valid login shells\n';
  const lines = base.split('\n').filter((l) => l !== '');
  const seen = new Set(lines);
  const dirPrefix = 'usr/share/debianutils/shells.d/';
  const files = [...fs.nodes.keys()]
    .filter((p) => p.startsWith(dirPrefix) && !p.slice(dirPrefix.length).includes('/'))
    .sort();
  for (const f of files) {
    const text = (await readNode(fs, f))?.toString('utf8') ?? '';
    for (const shell of text.split('\n').map((l) => l.trim())) {
      if (!shell.startsWith('/')) continue;
      for (const s of [shell, shell.startsWith('/usr/') ? shell.slice(4) : `/usr${shell}`]) {
        if (!seen.has(s)) {
          seen.add(s);
          lines.push(s);
        }
      }
    }
  }
  setNode(fs, 'etc/shells', file(`${lines.join('\n')}\n`));
}

interface Alternative {
  link: string;
  name: string;
  path: string;
  priority: number;
  slaves: { link: string; name: string; path: string }[];
  package: string;
}

/** `update-alternatives --install` calls with literal arguments, from every postinst. */
export function parseAlternatives(script: string, pkg: string): Alternative[] {
  const joined = script.replace(/\\\n/g, ' ');
  const out: Alternative[] = [];
  for (const m of joined.matchAll(/update-alternatives\s+(?:--quiet\s+)?--install\s+([^\n;&|]+)/g)) {
    const words = m[1]!.trim().split(/\s+/);
    if (words.length < 4 || words.some((w) => /[$`"']/.test(w))) continue;
    const [link, name, path, prio] = words as [string, string, string, string];
    if (!/^\d+$/.test(prio)) continue;
    const alt: Alternative = { link, name, path, priority: Number(prio), slaves: [], package: pkg };
    for (let i = 4; i + 3 < words.length && words[i] === '--slave'; i += 4)
      alt.slaves.push({ link: words[i + 1]!, name: words[i + 2]!, path: words[i + 3]! });
    out.push(alt);
  }
  return out;
}

/** update-alternatives in auto mode: per name the highest priority wins; links and dpkg's state file written. */
function writeAlternatives(fs: Rootfs): Map<string, string[]> {
  const byName = new Map<string, Alternative[]>();
  const byPackage = new Map<string, string[]>();
  for (const pkg of fs.packages) {
    const script = pkg.control.members.get('postinst')?.toString('utf8');
    if (!script) continue;
    for (const alt of parseAlternatives(script, pkg.name)) {
      if (!lookup(fs, alt.path)) continue;
      const list = byName.get(alt.name) ?? [];
      list.push(alt);
      byName.set(alt.name, list);
      byPackage.set(pkg.name, [...(byPackage.get(pkg.name) ?? []), alt.name]);
    }
  }
  for (const [name, alts] of [...byName].sort(([a], [b]) => compareEntryNames(a, b))) {
    const best = [...alts].sort((a, b) => b.priority - a.priority || (a.path < b.path ? -1 : 1))[0]!;
    const place = (link: string, altName: string, target: string) => {
      setNode(fs, `etc/alternatives/${altName}`, symlink(target));
      const l = mergedUsrPath(link.replace(/^\/+/, ''));
      if (!fs.nodes.has(l) || fs.nodes.get(l)?.owner === GENERATED)
        setNode(fs, l, symlink(`/etc/alternatives/${altName}`));
    };
    place(best.link, name, best.path);
    for (const s of best.slaves) if (lookup(fs, s.path)) place(s.link, s.name, s.path);
    const slaveNames = best.slaves.map((s) => s.name);
    const state = ['auto', best.link, ...best.slaves.flatMap((s) => [s.name, s.link]), ''];
    for (const a of [...alts].sort((x, y) => (x.path < y.path ? -1 : 1))) {
      state.push(a.path, String(a.priority));
      for (const sn of slaveNames) state.push(a.slaves.find((s) => s.name === sn)?.path ?? '');
    }
    state.push('');
    setNode(fs, `var/lib/dpkg/alternatives/${name}`, file(`${state.join('\n')}\n`));
  }
  return byPackage;
}

/**
 * update-ca-certificates on a fresh install: every certificate under /usr/share/ca-certificates enabled (the
 * debconf default), a .pem link per certificate in /etc/ssl/certs, and the bundle ca-certificates.crt as the
 * concatenation of the enabled certificates in ca-certificates.conf order, each ending in a newline.
 * Returns what it could not do.
 */
async function caCertificates(fs: Rootfs): Promise<string | undefined> {
  const root = 'usr/share/ca-certificates/';
  const certs = [...fs.nodes.keys()]
    .filter((p) => p.startsWith(root) && p.endsWith('.crt') && fs.nodes.get(p)?.type === 'file')
    .map((p) => p.slice(root.length))
    .sort();
  const conf = [
    '# This file lists certificates that you wish to use or to ignore to be',
    '# installed in /etc/ssl/certs.',
    '# update-ca-certificates(8) will update /etc/ssl/certs by reading this file.',
    '#',
    '# This is autogenerated by dpkg-reconfigure ca-certificates.',
    '# Certificates should be installed under /usr/share/ca-certificates',
    "# and files with extension '.crt' is recognized as available certs.",
    '#',
    '# line begins with # is comment.',
    '# line begins with ! is certificate filename to be deselected.',
    '#',
    ...certs,
  ];
  setNode(fs, 'etc/ca-certificates.conf', file(`${conf.join('\n')}\n`));
  const bundle: Buffer[] = [];
  for (const c of certs) {
    const bytes = (await readNode(fs, `${root}${c}`)) ?? Buffer.alloc(0);
    bundle.push(bytes);
    if (bytes.length > 0 && bytes[bytes.length - 1] !== 0x0a) bundle.push(Buffer.from('\n'));
    const base = c
      .split('/')
      .pop()!
      .replace(/\.crt$/, '.pem')
      .replace(/ /g, '_');
    setNode(fs, `etc/ssl/certs/${base}`, symlink(`/${root}${c}`));
  }
  setNode(fs, 'etc/ssl/certs/ca-certificates.crt', file(Buffer.concat(bundle)));
  return 'OpenSSL hash links (/etc/ssl/certs/<hash>.0) are not created: programs that read the bundle or the .pem files work, lookups by subject hash (CApath) do not';
}

/** dpkg's database, as after `dpkg --install`: status, the file lists, md5sums, conffiles and scripts. */
function writeDpkgDatabase(fs: Rootfs): void {
  const paragraphs: string[] = [];
  for (const p of [...fs.packages].sort((a, b) => (a.name < b.name ? -1 : 1))) {
    const lines = p.control.control.split('\n');
    const conffiles =
      p.control.members
        .get('conffiles')
        ?.toString('utf8')
        .split('\n')
        .filter((l) => l.startsWith('/')) ?? [];
    const out: string[] = [];
    for (const l of lines) {
      out.push(l);
      if (l.startsWith('Package:')) out.push('Status: install ok installed');
    }
    if (conffiles.length > 0) {
      out.push('Conffiles:');
      for (const c of conffiles) {
        const n = fs.nodes.get(mergedUsrPath(c.replace(/^\/+/, '')));
        const md5 = n?.type === 'file' ? md5Of(n) : undefined;
        out.push(` ${c} ${md5 ?? 'newconffile'}`);
      }
    }
    paragraphs.push(out.join('\n'));
    const infoName = p.control.fields['Multi-Arch'] === 'same' ? `${p.name}:${p.arch}` : p.name;
    setNode(fs, `var/lib/dpkg/info/${infoName}.list`, file(`${p.files.join('\n')}\n`));
    for (const [member, bytes] of p.control.members) {
      if (member === 'control' || member.includes('/')) continue;
      const exec = ['preinst', 'postinst', 'prerm', 'postrm', 'config'].includes(member);
      setNode(fs, `var/lib/dpkg/info/${infoName}.${member}`, file(bytes, exec ? 0o755 : 0o644));
    }
  }
  setNode(fs, 'var/lib/dpkg/status', file(`${paragraphs.join('\n\n')}\n`));
  for (const f of ['available', 'statoverride'])
    if (!fs.nodes.has(`var/lib/dpkg/${f}`)) setNode(fs, `var/lib/dpkg/${f}`, file(''));
}

const md5Cache = new WeakMap<FsNode, string>();
function md5Of(n: FsNode): string | undefined {
  // Conffile sums are recorded only for generated content or small files already in memory; package files are
  // hashed lazily by the caller when needed (see md5Files).
  if (n.content) return createHash('md5').update(n.content).digest('hex');
  return md5Cache.get(n);
}

/** Fill the md5 cache for package conffiles (read from disk), before writeDpkgDatabase runs. */
export async function md5Conffiles(fs: Rootfs): Promise<void> {
  for (const p of fs.packages) {
    const conffiles =
      p.control.members
        .get('conffiles')
        ?.toString('utf8')
        .split('\n')
        .filter((l) => l.startsWith('/')) ?? [];
    for (const c of conffiles) {
      const n = fs.nodes.get(mergedUsrPath(c.replace(/^\/+/, '')));
      if (n?.type === 'file' && n.source)
        md5Cache.set(
          n,
          createHash('md5')
            .update(await readFile(n.source.path))
            .digest('hex'),
        );
    }
  }
}

export type { InstalledPackage };
