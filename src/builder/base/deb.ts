import { spawn } from 'node:child_process';
import tar from 'tar-stream';
import type { Header } from 'tar-stream';
import { PackfarmError } from '../../util/errors.js';

/**
 * Reading .deb files. dpkg-deb turns the data and control members into plain tar streams whatever their
 * compression (gzip, xz, zstd), and tar-stream walks them entry by entry: nothing is unpacked onto the host's
 * filesystem by a tool that would follow symlinks or need root for ownership.
 */

export interface DebEntry {
  /** Normalised: no leading './' or '/', no trailing '/'; '' for the root entry. */
  path: string;
  type: 'file' | 'dir' | 'symlink' | 'link';
  mode: number;
  uid: number;
  gid: number;
  size: number;
  /** Symlink target (verbatim) or hard link target (normalised like `path`). */
  linkname?: string;
}

export interface DebControl {
  /** The control file's text (one RFC 822 paragraph). */
  control: string;
  fields: Record<string, string>;
  /** Maintainer scripts and other control members by name (postinst, preinst, conffiles, md5sums, …). */
  members: Map<string, Buffer>;
}

function normalise(name: string): string {
  return name
    .replace(/^\.?\/+/, '')
    .replace(/^\.$/, '')
    .replace(/\/+$/, '');
}

/** Run `dpkg-deb FLAG file` and feed its stdout to tar-stream; `onEntry` consumes every entry's stream. */
async function walkTar(
  flag: '--fsys-tarfile' | '--ctrl-tarfile',
  file: string,
  onEntry: (header: Header, body: AsyncIterable<Buffer>) => Promise<void>,
): Promise<void> {
  const child = spawn('dpkg-deb', [flag, file], { stdio: ['ignore', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.on('data', (d: Buffer) => {
    stderr += d.toString();
  });
  const exited = new Promise<number>((resolve, reject) => {
    child.on('error', (err: NodeJS.ErrnoException) =>
      reject(
        err.code === 'ENOENT'
          ? new PackfarmError('DPKG_DEB_MISSING', 'dpkg-deb is not installed: it reads the .deb packages', {
              hint: 'run packfarm base create on Debian or Ubuntu',
            })
          : err,
      ),
    );
    child.on('close', (code) => resolve(code ?? 1));
  });
  const extract = tar.extract();
  const done = (async () => {
    for await (const entry of extract) {
      await onEntry(entry.header, entry as unknown as AsyncIterable<Buffer>);
    }
  })();
  child.stdout.pipe(extract);
  const [code] = await Promise.all([exited, done]);
  if (code !== 0)
    throw new PackfarmError(
      'INVALID_DEB',
      `${file}: dpkg-deb ${flag} failed: ${stderr.trim() || `exit ${code}`}`,
      {
        hint: 'the cached .deb may be damaged; delete it and run again',
      },
    );
}

/** Every entry of the package's data member, in archive order; `onFile` receives each regular file's bytes. */
export async function readDebData(
  file: string,
  on: (entry: DebEntry, content: AsyncIterable<Buffer> | undefined) => Promise<void>,
): Promise<void> {
  await walkTar('--fsys-tarfile', file, async (h, body) => {
    const path = normalise(h.name);
    const base = { path, mode: (h.mode ?? 0o644) & 0o7777, uid: h.uid ?? 0, gid: h.gid ?? 0, size: 0 };
    switch (h.type) {
      case 'directory':
        await on({ ...base, type: 'dir' }, undefined);
        break;
      case 'file':
      case 'contiguous-file':
        await on({ ...base, type: 'file', size: h.size ?? 0 }, body);
        break;
      case 'symlink':
        await on({ ...base, type: 'symlink', linkname: h.linkname ?? '' }, undefined);
        break;
      case 'link':
        await on({ ...base, type: 'link', linkname: normalise(h.linkname ?? '') }, undefined);
        break;
      default:
        throw new PackfarmError('INVALID_DEB', `${file}: entry ${h.name} has unsupported type ${h.type}`, {
          hint: 'packages with device nodes or fifos cannot go into a base image',
        });
    }
    // Whatever the handler did not read must still be drained for the next entry to come.
    for await (const _ of body) {
    }
  });
}

export async function readDebControl(file: string): Promise<DebControl> {
  const members = new Map<string, Buffer>();
  await walkTar('--ctrl-tarfile', file, async (h, body) => {
    const chunks: Buffer[] = [];
    for await (const c of body) chunks.push(c);
    const name = normalise(h.name);
    if (h.type === 'file' && name !== '') members.set(name, Buffer.concat(chunks));
  });
  const control = members.get('control')?.toString('utf8');
  if (control === undefined)
    throw new PackfarmError('INVALID_DEB', `${file}: no control file in the package`, {
      hint: 'the cached .deb may be damaged; delete it and run again',
    });
  return { control: control.trimEnd(), fields: parseControl(control), members };
}

/** One control paragraph: `Field: value` with continuation lines (kept, newline-joined). */
export function parseControl(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  let last: string | undefined;
  for (const line of text.split('\n')) {
    if (line === '') continue;
    if ((line.startsWith(' ') || line.startsWith('\t')) && last !== undefined) {
      out[last] = `${out[last]}\n${line}`;
      continue;
    }
    const colon = line.indexOf(':');
    if (colon <= 0) continue;
    last = line.slice(0, colon);
    out[last] = line.slice(colon + 1).trim();
  }
  return out;
}
