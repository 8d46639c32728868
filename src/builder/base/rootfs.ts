import { createWriteStream } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { MemoryEntry } from '../../archive/index.js';
import { compareEntryNames } from '../../archive/index.js';
import { type DebControl, readDebControl, readDebData } from './deb.js';

/**
 * A root filesystem assembled from .deb packages, held as a table of entries (path → type, mode, owner, link
 * target, and where a file's bytes wait on disk) rather than as a directory on the host: ownership and
 * setuid/setgid bits survive without root, and nothing a package ships can point a write outside the work dir.
 *
 * The layout is merged-/usr, as debootstrap makes Debian 12 systems: /bin, /sbin and /lib* are symlinks into
 * /usr, and what a package ships below them is stored under /usr (what dpkg does writing through those links).
 */

export interface FsNode {
  type: 'dir' | 'file' | 'symlink' | 'link';
  mode: number;
  uid: number;
  gid: number;
  linkname?: string;
  /** A file's bytes on disk (package files) … */
  source?: { path: string; size: number };
  /** … or in memory (generated files). */
  content?: Buffer;
  /** The package that shipped it, or 'packfarm' for generated entries. */
  owner: string;
}

export interface InstalledPackage {
  name: string;
  version: string;
  arch: string;
  control: DebControl;
  /** Paths the package shipped, as dpkg lists them ('/.', '/usr', …, before the merged-/usr mapping). */
  files: string[];
}

export interface Rootfs {
  nodes: Map<string, FsNode>;
  packages: InstalledPackage[];
  /** Where package file bytes are kept until the layer is written. */
  workDir: string;
  nextFile: number;
  warnings: { package: string; message: string }[];
}

/** Top-level directories that are links into /usr on a merged-/usr system. */
const MERGED_DIRS = new Set(['bin', 'sbin', 'lib', 'lib32', 'lib64', 'libx32', 'libo32']);

export function mergedUsrPath(path: string): string {
  const slash = path.indexOf('/');
  const top = slash < 0 ? path : path.slice(0, slash);
  return MERGED_DIRS.has(top) ? `usr/${path}` : path;
}

export async function createRootfs(workDir: string): Promise<Rootfs> {
  await mkdir(join(workDir, 'files'), { recursive: true });
  return { nodes: new Map(), packages: [], workDir, nextFile: 0, warnings: [] };
}

function ensureParents(fs: Rootfs, path: string, owner: string): void {
  const parts = path.split('/');
  for (let i = 1; i < parts.length; i++) {
    const dir = parts.slice(0, i).join('/');
    if (!fs.nodes.has(dir)) fs.nodes.set(dir, { type: 'dir', mode: 0o755, uid: 0, gid: 0, owner });
  }
}

/** Put an entry into the table; a later package's file replaces an earlier one (dpkg's Replaces), with a note. */
export function setNode(fs: Rootfs, path: string, node: FsNode): void {
  ensureParents(fs, path, node.owner);
  const existing = fs.nodes.get(path);
  if (existing?.type === 'dir') {
    // dpkg keeps an existing directory's metadata when another package ships it again.
    if (node.type !== 'dir')
      fs.warnings.push({
        package: node.owner,
        message: `/${path} is a directory (from ${existing.owner}); the ${node.type} this package ships there is left out`,
      });
    return;
  }
  if (existing && node.owner !== 'packfarm' && existing.owner !== node.owner)
    fs.warnings.push({ package: node.owner, message: `/${path} replaces the one from ${existing.owner}` });
  fs.nodes.set(path, node);
}

/** Unpack one package into the table. Packages are added in name order, so the result is deterministic. */
export async function addPackage(
  fs: Rootfs,
  pkg: { name: string; version: string; arch: string; file: string },
): Promise<void> {
  const control = await readDebControl(pkg.file);
  const files: string[] = [];
  await readDebData(pkg.file, async (e, content) => {
    files.push(e.path === '' ? '/.' : `/${e.path}`);
    if (e.path === '') return;
    const path = mergedUsrPath(e.path);
    const base = { mode: e.mode, uid: e.uid, gid: e.gid, owner: pkg.name };
    if (e.type === 'dir') setNode(fs, path, { ...base, type: 'dir' });
    else if (e.type === 'symlink')
      setNode(fs, path, { ...base, type: 'symlink', linkname: e.linkname ?? '' });
    else if (e.type === 'link')
      setNode(fs, path, { ...base, type: 'link', linkname: mergedUsrPath(e.linkname ?? '') });
    else {
      const dest = join(fs.workDir, 'files', String(fs.nextFile++));
      await pipeline(content ?? [], createWriteStream(dest, { mode: 0o600 }));
      setNode(fs, path, { ...base, type: 'file', source: { path: dest, size: e.size } });
    }
  });
  fs.packages.push({ name: pkg.name, version: pkg.version, arch: pkg.arch, control, files });
}

/**
 * The table as layer entries: the merged-/usr links added, hard links turned into "first name in layer order
 * holds the bytes, later names link to it" (a tar reader needs the file before its links).
 */
export function rootfsEntries(fs: Rootfs): MemoryEntry[] {
  const nodes = new Map(fs.nodes);
  for (const dir of MERGED_DIRS) {
    if (nodes.has(`usr/${dir}`) || dir === 'bin' || dir === 'sbin' || dir === 'lib') {
      nodes.set(dir, {
        type: 'symlink',
        mode: 0o777,
        uid: 0,
        gid: 0,
        linkname: `usr/${dir}`,
        owner: 'packfarm',
      });
      if (!nodes.has(`usr/${dir}`))
        nodes.set(`usr/${dir}`, { type: 'dir', mode: 0o755, uid: 0, gid: 0, owner: 'packfarm' });
    }
  }
  // Group every name of one file: the target and its hard links.
  const groups = new Map<string, string[]>();
  for (const [path, n] of nodes) {
    if (n.type !== 'link') continue;
    const target = n.linkname ?? '';
    const t = nodes.get(target);
    if (t?.type !== 'file') {
      fs.warnings.push({
        package: n.owner,
        message: `/${path} is a hard link to /${target}, which is not a file; left out`,
      });
      nodes.delete(path);
      continue;
    }
    const g = groups.get(target) ?? [target];
    g.push(path);
    groups.set(target, g);
  }
  for (const [target, names] of groups) {
    names.sort(compareEntryNames);
    const first = names[0]!;
    const file = nodes.get(target)!;
    for (const name of names) {
      const n = nodes.get(name)!;
      if (name === first) nodes.set(name, { ...file, mode: n.mode, uid: n.uid, gid: n.gid, owner: n.owner });
      else nodes.set(name, { ...n, type: 'link', linkname: first });
    }
  }
  const out: MemoryEntry[] = [];
  for (const [path, n] of nodes) {
    const e: MemoryEntry = { path, type: n.type, mode: n.mode, uid: n.uid, gid: n.gid };
    if (n.linkname !== undefined) e.linkname = n.linkname;
    if (n.source) e.source = n.source;
    if (n.content) e.content = n.content;
    out.push(e);
  }
  return out;
}
