/**
 * USTAR header encoding with PAX extended headers for what USTAR cannot hold. We encode headers ourselves
 * (rather than through tar-stream's packer) so that every byte is ours to reason about: the layer digest is an
 * identity, and a library default (a mode of 0 silently becoming 0644, a 32-bit mtime, a pax header name) must
 * never leak into it. Reading tars goes through tar-stream.
 */

export type TarEntryType = 'file' | 'link' | 'symlink' | 'dir';

export interface TarHeader {
  /** Full entry name, '/'-separated, relative (no leading '/'). Directories get a trailing '/' added here. */
  name: string;
  type: TarEntryType;
  /** Permission bits (masked to 0o7777). */
  mode: number;
  uid: number;
  gid: number;
  /** Content size; always 0 for anything but 'file'. */
  size: number;
  /** Seconds since the epoch. */
  mtime: number;
  /** Symlink target, or the entry name a hardlink points to. */
  linkname?: string;
}

export const BLOCK = 512;
/** Two zero blocks end an archive. */
export const TAR_TRAILER: Buffer = Buffer.alloc(BLOCK * 2);
const ZEROS = Buffer.alloc(BLOCK);

const MAX_OCTAL_7 = 0o7777777;
const MAX_OCTAL_11 = 0o77777777777;

const TYPEFLAG: Record<TarEntryType, number> = { file: 0x30, link: 0x31, symlink: 0x32, dir: 0x35 };

/** Zero bytes that pad `size` bytes of content up to a whole block. */
export function tarPadding(size: number): Buffer {
  const rest = size % BLOCK;
  return rest === 0 ? ZEROS.subarray(0, 0) : ZEROS.subarray(0, BLOCK - rest);
}

/** The largest mtime (seconds) a USTAR header holds; later dates would need a PAX record we do not write. */
export const MAX_TAR_MTIME = MAX_OCTAL_11;

/**
 * Encode one entry's header: a single 512-byte USTAR block, or a PAX header (block + records) followed by the
 * USTAR block when the name, link name, size or ids do not fit. Output depends only on `h`.
 */
export function encodeTarHeader(h: TarHeader): Buffer {
  if (!Number.isInteger(h.mtime) || h.mtime < 0 || h.mtime > MAX_OCTAL_11) {
    throw new Error(`tar header for ${h.name}: mtime ${h.mtime} is outside 0..${MAX_OCTAL_11}`);
  }
  for (const [field, value] of [
    ['uid', h.uid],
    ['gid', h.gid],
    ['size', h.size],
  ] as const) {
    if (!Number.isSafeInteger(value) || value < 0) {
      throw new Error(`tar header for ${h.name}: ${field} ${value} is not a non-negative integer`);
    }
  }
  const name = h.type === 'dir' && !h.name.endsWith('/') ? `${h.name}/` : h.name;
  const pax: Array<[string, string]> = [];

  const split = splitUstarName(name);
  if (split === undefined) pax.push(['path', name]);
  const linkname = h.linkname ?? '';
  const linkFits = isAscii(linkname) && linkname.length <= 100;
  if (!linkFits) pax.push(['linkpath', linkname]);
  if (h.size > MAX_OCTAL_11) pax.push(['size', String(h.size)]);
  if (h.uid > MAX_OCTAL_7) pax.push(['uid', String(h.uid)]);
  if (h.gid > MAX_OCTAL_7) pax.push(['gid', String(h.gid)]);

  const block = ustarBlock({
    name: split?.name ?? fallbackName(name),
    prefix: split?.prefix ?? '',
    typeflag: TYPEFLAG[h.type],
    mode: h.mode & 0o7777,
    uid: h.uid > MAX_OCTAL_7 ? 0 : h.uid,
    gid: h.gid > MAX_OCTAL_7 ? 0 : h.gid,
    size: h.size > MAX_OCTAL_11 ? 0 : h.size,
    mtime: h.mtime,
    linkname: linkFits ? linkname : fallbackName(linkname),
  });
  if (pax.length === 0) return block;

  // Records in a fixed key order so that equal headers give equal bytes.
  pax.sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0));
  const records = Buffer.from(pax.map(([k, v]) => paxRecord(k, v)).join(''), 'utf8');
  const paxBlock = ustarBlock({
    name: fallbackName(`PaxHeaders/${baseName(name)}`),
    prefix: '',
    typeflag: 0x78, // 'x': extended header for the next entry
    mode: 0o644,
    uid: h.uid > MAX_OCTAL_7 ? 0 : h.uid,
    gid: h.gid > MAX_OCTAL_7 ? 0 : h.gid,
    size: records.length,
    mtime: h.mtime,
    linkname: '',
  });
  return Buffer.concat([paxBlock, records, tarPadding(records.length), block]);
}

/** "LEN key=value\n" where LEN counts the whole record, its own digits included. */
function paxRecord(key: string, value: string): string {
  const body = ` ${key}=${value}\n`;
  const bodyLen = Buffer.byteLength(body, 'utf8');
  let digits = String(bodyLen).length;
  if (String(bodyLen + digits).length > digits) digits += 1;
  return `${bodyLen + digits}${body}`;
}

/**
 * Fit an ASCII name into USTAR's name (100 bytes) and prefix (155 bytes) fields, splitting at the first '/'
 * that leaves a tail short enough; undefined when it cannot fit (a PAX path record is needed).
 */
function splitUstarName(name: string): { name: string; prefix: string } | undefined {
  if (!isAscii(name)) return undefined;
  if (name.length <= 100) return { name, prefix: '' };
  // The tail must not be empty or just the directory slash, and a split point is a '/' in the name.
  for (let i = name.indexOf('/'); i !== -1; i = name.indexOf('/', i + 1)) {
    const prefix = name.slice(0, i);
    const tail = name.slice(i + 1);
    if (prefix.length > 155) return undefined;
    if (tail.length <= 100 && tail !== '' && tail !== '/') return { name: tail, prefix };
  }
  return undefined;
}

/** What goes in a USTAR field that a PAX record overrides: readable for old tools, never relied upon. */
function fallbackName(s: string): string {
  return s.replace(/[^\x20-\x7e]/g, '_').slice(0, 100);
}

function baseName(name: string): string {
  const trimmed = name.endsWith('/') ? name.slice(0, -1) : name;
  return trimmed.slice(trimmed.lastIndexOf('/') + 1);
}

function isAscii(s: string): boolean {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c === 0 || c > 0x7e) return false;
  }
  return true;
}

interface UstarFields {
  name: string;
  prefix: string;
  typeflag: number;
  mode: number;
  uid: number;
  gid: number;
  size: number;
  mtime: number;
  linkname: string;
}

function ustarBlock(f: UstarFields): Buffer {
  const b = Buffer.alloc(BLOCK);
  b.write(f.name, 0, 100, 'latin1');
  writeOctal(b, 100, 8, f.mode);
  writeOctal(b, 108, 8, f.uid);
  writeOctal(b, 116, 8, f.gid);
  writeOctal(b, 124, 12, f.size);
  writeOctal(b, 136, 12, f.mtime);
  b[156] = f.typeflag;
  b.write(f.linkname, 157, 100, 'latin1');
  b.write('ustar\x0000', 257, 8, 'latin1');
  // uname (265) and gname (297) stay blank: ownership is numeric only.
  writeOctal(b, 329, 8, 0);
  writeOctal(b, 337, 8, 0);
  b.write(f.prefix, 345, 155, 'latin1');
  // The checksum is computed with its own field read as eight spaces.
  b.fill(0x20, 148, 156);
  let sum = 0;
  for (let i = 0; i < BLOCK; i++) sum += b[i]!;
  b.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148, 8, 'latin1');
  return b;
}

/** Zero-padded octal digits filling all but the last byte of the field, which stays NUL. */
function writeOctal(b: Buffer, offset: number, width: number, value: number): void {
  const digits = value.toString(8).padStart(width - 1, '0');
  if (digits.length > width - 1)
    throw new Error(`tar header: ${value} does not fit ${width - 1} octal digits`);
  b.write(digits, offset, width - 1, 'latin1');
}
