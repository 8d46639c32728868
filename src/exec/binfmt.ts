import * as nodeFs from 'node:fs/promises';
import { join } from 'node:path';
import {
  type Platform,
  compatiblePlatforms,
  formatPlatform,
  hostPlatform,
  platformsEqual,
} from '../oci/platform.js';

/**
 * What this machine can run: its native platforms plus the foreign ones the kernel hands to an emulator
 * through binfmt_misc (exec-node.md §1). A handler's platform is read from its ELF magic and mask, never
 * guessed from its name: `qemu-aarch64` is arm64 because bytes 4, 5 and 18–19 of its magic say 64-bit,
 * little-endian, e_machine 183.
 */

export const BINFMT_DIR = '/proc/sys/fs/binfmt_misc';

/** One registered handler, as its file under /proc/sys/fs/binfmt_misc reads. */
export interface BinfmtEntry {
  name: string;
  enabled: boolean;
  interpreter: string;
  /** The flag letters as registered, e.g. `POF`. */
  flags: string;
  /**
   * `F` (fix binary): the kernel opened the interpreter at registration, so a binary inside a container's
   * root filesystem, where the interpreter path does not exist, still starts. Containers need it.
   */
  fixBinary: boolean;
  /** Magic entries only; extension (`E`) entries match file names and have none. */
  offset?: number;
  magic?: Buffer;
  mask?: Buffer;
  /** The architecture the magic selects, when it is an ELF header we can decode. */
  platform?: Platform;
}

/** The slice of node:fs/promises these readers use, so units can run against memfs. */
export interface BinfmtFs {
  readdir(path: string): Promise<string[]>;
  readFile(path: string, encoding: 'utf8'): Promise<string>;
}

const ELF_MAGIC = Buffer.from([0x7f, 0x45, 0x4c, 0x46]);
const EI_CLASS = 4;
const EI_DATA = 5;
const E_MACHINE = 18;
/** The magic must cover the ELF identification and e_machine. */
const MIN_MAGIC = E_MACHINE + 2;

/**
 * (e_machine, class, data) → OCI architecture. Only unambiguous pairs: 32-bit MIPS is left out because its
 * o32 and n32 ABIs share class, data and e_machine and differ only in e_flags.
 */
const ELF_ARCH: ReadonlyArray<{ machine: number; bits: 32 | 64; endian: 'le' | 'be'; platform: Platform }> = [
  { machine: 62, bits: 64, endian: 'le', platform: { os: 'linux', architecture: 'amd64' } },
  { machine: 3, bits: 32, endian: 'le', platform: { os: 'linux', architecture: '386' } },
  { machine: 183, bits: 64, endian: 'le', platform: { os: 'linux', architecture: 'arm64' } },
  // qemu-arm runs ARMv7 code (and the older variants, see compatiblePlatforms).
  { machine: 40, bits: 32, endian: 'le', platform: { os: 'linux', architecture: 'arm', variant: 'v7' } },
  { machine: 21, bits: 64, endian: 'le', platform: { os: 'linux', architecture: 'ppc64le' } },
  { machine: 21, bits: 64, endian: 'be', platform: { os: 'linux', architecture: 'ppc64' } },
  { machine: 22, bits: 64, endian: 'be', platform: { os: 'linux', architecture: 's390x' } },
  { machine: 243, bits: 64, endian: 'le', platform: { os: 'linux', architecture: 'riscv64' } },
  { machine: 258, bits: 64, endian: 'le', platform: { os: 'linux', architecture: 'loong64' } },
  { machine: 8, bits: 64, endian: 'le', platform: { os: 'linux', architecture: 'mips64le' } },
  { machine: 8, bits: 64, endian: 'be', platform: { os: 'linux', architecture: 'mips64' } },
];

/**
 * The platform an ELF binfmt magic selects, or undefined when the magic is not an ELF header, leaves the
 * class, byte order or machine unmasked (so it matches several architectures), or names an architecture
 * without an OCI name here.
 */
export function elfPlatformOf(magic: Buffer, mask: Buffer | undefined, offset = 0): Platform | undefined {
  if (offset !== 0 || magic.length < MIN_MAGIC) return undefined;
  const m = mask ?? Buffer.alloc(magic.length, 0xff);
  if (m.length < MIN_MAGIC) return undefined;
  const exact = (i: number) => m[i] === 0xff;
  for (let i = 0; i < ELF_MAGIC.length; i++) if (!exact(i) || magic[i] !== ELF_MAGIC[i]) return undefined;
  if (!exact(EI_CLASS) || !exact(EI_DATA)) return undefined;
  const cls = magic[EI_CLASS];
  const data = magic[EI_DATA];
  const bits = cls === 1 ? 32 : cls === 2 ? 64 : undefined;
  const endian = data === 1 ? 'le' : data === 2 ? 'be' : undefined;
  if (!bits || !endian) return undefined;
  // e_machine in the header's byte order. Its mask may leave bits out (Debian's ppc64le handler ignores the
  // high byte): the magic names the one architecture whose e_machine agrees on every masked bit.
  const u16 = (b: Buffer) =>
    endian === 'le' ? b[E_MACHINE]! | (b[E_MACHINE + 1]! << 8) : (b[E_MACHINE]! << 8) | b[E_MACHINE + 1]!;
  const want = u16(magic);
  const care = u16(m);
  const hits = ELF_ARCH.filter(
    (a) => a.bits === bits && a.endian === endian && (a.machine & care) === (want & care),
  );
  return hits.length === 1 ? { ...hits[0]!.platform } : undefined;
}

/**
 * Parse one handler file:
 * ```
 * enabled
 * interpreter /usr/libexec/qemu-binfmt/aarch64-binfmt-P
 * flags: POF
 * offset 0
 * magic 7f454c46…
 * mask ffffffff…
 * ```
 */
export function parseBinfmtEntry(name: string, text: string): BinfmtEntry {
  const lines = text.split('\n').map((l) => l.trim());
  const value = (key: string) => {
    const line = lines.find((l) => l.startsWith(`${key} `) || l.startsWith(`${key}:`));
    return line?.slice(key.length).replace(/^:?\s*/, '');
  };
  const flags = value('flags') ?? '';
  const entry: BinfmtEntry = {
    name,
    enabled: lines[0] === 'enabled',
    interpreter: value('interpreter') ?? '',
    flags,
    fixBinary: flags.includes('F'),
  };
  const magicHex = value('magic');
  if (magicHex !== undefined && /^([0-9a-f]{2})+$/i.test(magicHex)) {
    entry.magic = Buffer.from(magicHex, 'hex');
    const offset = Number(value('offset') ?? '0');
    entry.offset = Number.isInteger(offset) ? offset : Number.NaN;
    const maskHex = value('mask');
    if (maskHex !== undefined && /^([0-9a-f]{2})+$/i.test(maskHex)) entry.mask = Buffer.from(maskHex, 'hex');
    const platform = elfPlatformOf(entry.magic, entry.mask, entry.offset);
    if (platform) entry.platform = platform;
  }
  return entry;
}

export interface BinfmtState {
  /** Whether binfmt_misc is mounted (its `register` file exists). */
  mounted: boolean;
  /** The facility's `status` (a disabled facility runs no handler). */
  enabled: boolean;
  entries: BinfmtEntry[];
}

/** Read every handler registered with the kernel. */
export async function readBinfmt(dir = BINFMT_DIR, fs: BinfmtFs = nodeFs): Promise<BinfmtState> {
  let names: string[];
  try {
    names = await fs.readdir(dir);
  } catch {
    return { mounted: false, enabled: false, entries: [] };
  }
  if (!names.includes('register')) return { mounted: false, enabled: false, entries: [] };
  const status = await fs.readFile(join(dir, 'status'), 'utf8').catch(() => '');
  const entries: BinfmtEntry[] = [];
  for (const name of names.sort()) {
    if (name === 'register' || name === 'status') continue;
    let text: string;
    try {
      text = await fs.readFile(join(dir, name), 'utf8');
    } catch {
      continue; // removed between readdir and read
    }
    entries.push(parseBinfmtEntry(name, text));
  }
  return { mounted: true, enabled: status.trim() === 'enabled', entries };
}

export interface EmulatedPlatform {
  platform: Platform;
  /** The handler's name and interpreter, e.g. qemu-aarch64 → /usr/libexec/qemu-binfmt/aarch64-binfmt-P. */
  handler: string;
  interpreter: string;
  fixBinary: boolean;
  /** Whether a container root filesystem can use it (enabled, with the F flag). */
  usableInContainers: boolean;
}

export interface MachinePlatforms {
  /** What the CPU runs itself, best first (amd64 also runs 386; arm64 runs arm/v8…v5). */
  native: Platform[];
  /** Foreign platforms with an enabled handler, one per platform (a handler with F is preferred). */
  emulated: EmulatedPlatform[];
  binfmt: { mounted: boolean; enabled: boolean };
}

/** Native platforms plus every enabled binfmt_misc handler whose ELF magic decodes to another platform. */
export async function detectPlatforms(
  opts: { dir?: string; fs?: BinfmtFs; host?: Platform } = {},
): Promise<MachinePlatforms> {
  const native = compatiblePlatforms(opts.host ?? hostPlatform());
  const state = await readBinfmt(opts.dir ?? BINFMT_DIR, opts.fs ?? nodeFs);
  const nativeKeys = new Set(native.map(formatPlatform));
  const byPlatform = new Map<string, EmulatedPlatform>();
  if (state.enabled) {
    for (const e of state.entries) {
      if (!e.enabled || !e.platform) continue;
      const key = formatPlatform(e.platform);
      if (nativeKeys.has(key)) continue;
      const prev = byPlatform.get(key);
      if (prev?.usableInContainers) continue;
      byPlatform.set(key, {
        platform: e.platform,
        handler: e.name,
        interpreter: e.interpreter,
        fixBinary: e.fixBinary,
        usableInContainers: e.fixBinary,
      });
    }
  }
  const emulated = [...byPlatform.entries()].sort(([a], [b]) => (a < b ? -1 : 1)).map(([, v]) => v);
  return { native, emulated, binfmt: { mounted: state.mounted, enabled: state.enabled } };
}

/**
 * The platforms an OCI-runtime build can target here: native ones, and emulated ones whose handler works
 * inside a container root filesystem.
 */
export function runnablePlatforms(m: MachinePlatforms): Platform[] {
  return [...m.native, ...m.emulated.filter((e) => e.usableInContainers).map((e) => e.platform)];
}

/**
 * How this machine runs `want` in a container: natively, through an emulator (a handler with the F flag;
 * an arm/v7 handler also runs v6 and v5 code), or not at all.
 */
export function howToRun(m: MachinePlatforms, want: Platform): 'native' | 'emulated' | undefined {
  if (m.native.some((p) => platformsEqual(p, want))) return 'native';
  for (const e of m.emulated) {
    if (!e.usableInContainers) continue;
    const same = compatiblePlatforms(e.platform).filter((p) => p.architecture === e.platform.architecture);
    if (same.some((p) => platformsEqual(p, want))) return 'emulated';
  }
  return undefined;
}

/**
 * Whether the kernel here can start an ELF binary whose first bytes are `header`: natively, or through an
 * enabled binfmt_misc handler with the F flag whose magic matches it under its mask (what the kernel itself
 * compares). Undefined when `header` is not an ELF header.
 */
export function elfRunnable(
  header: Buffer,
  native: readonly Platform[],
  binfmt: BinfmtState,
): { runnable: boolean /** e.g. `a linux/arm64 binary` */; describe: string } | undefined {
  if (header.length < MIN_MAGIC || !header.subarray(0, 4).equals(ELF_MAGIC)) return undefined;
  const platform = elfPlatformOf(header.subarray(0, MIN_MAGIC), undefined);
  const bits = header[EI_CLASS] === 1 ? '32-bit' : '64-bit';
  const le = header[EI_DATA] === 1;
  const machine = le ? header.readUInt16LE(E_MACHINE) : header.readUInt16BE(E_MACHINE);
  const describe = platform
    ? `a ${formatPlatform(platform)} binary`
    : `an ELF binary for machine ${machine} (${bits}, ${le ? 'little' : 'big'}-endian)`;
  if (platform && native.some((p) => platformsEqual(p, platform))) return { runnable: true, describe };
  const handled =
    binfmt.enabled &&
    binfmt.entries.some((e) => {
      if (!e.enabled || !e.fixBinary || !e.magic || e.offset !== 0 || header.length < e.magic.length)
        return false;
      for (let i = 0; i < e.magic.length; i++) {
        const m = e.mask?.[i] ?? 0xff;
        if ((header[i]! & m) !== (e.magic[i]! & m)) return false;
      }
      return true;
    });
  return { runnable: handled, describe };
}
