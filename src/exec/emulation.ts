import { execFile } from 'node:child_process';
import { access, readFile, readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';
import {
  type Platform,
  compatiblePlatforms,
  formatPlatform,
  hostPlatform,
  platformsEqual,
} from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';
import { BINFMT_DIR, elfPlatformOf, readBinfmt } from './binfmt.js';

/**
 * `packfarm node setup-emulation`: register the qemu-user-static handlers Debian installs in
 * /usr/lib/binfmt.d with the kernel, each with the F flag so binaries inside a container root filesystem
 * (where /usr/libexec/qemu-binfmt does not exist) still start. Needs root: binfmt_misc is global to the kernel.
 */

export const BINFMT_CONF_DIR = '/usr/lib/binfmt.d';

/** One `:name:type:offset:magic:mask:interpreter:flags` registration line. */
export interface BinfmtRegistration {
  name: string;
  type: string;
  offset: string;
  magic: string;
  mask: string;
  interpreter: string;
  flags: string;
  /** Decoded from the magic and mask. */
  platform?: Platform;
  /** The file it came from. */
  source: string;
}

/** Decode a binfmt.d field: `\xNN` escapes are bytes, anything else is itself. */
export function decodeBinfmtField(field: string): Buffer {
  const bytes: number[] = [];
  for (let i = 0; i < field.length; ) {
    const esc = /^\\x([0-9a-fA-F]{2})/.exec(field.slice(i));
    if (esc) {
      bytes.push(Number.parseInt(esc[1]!, 16));
      i += 4;
    } else if (field[i] === '\\' && field[i + 1] === '\\') {
      bytes.push(0x5c);
      i += 2;
    } else {
      bytes.push(field.charCodeAt(i));
      i += 1;
    }
  }
  return Buffer.from(bytes);
}

/** Parse a binfmt.d line; undefined for comments, blank lines and lines that are not registrations. */
export function parseBinfmtConfLine(line: string, source: string): BinfmtRegistration | undefined {
  const t = line.trim();
  if (t === '' || t.startsWith('#') || t.startsWith(';')) return undefined;
  const delim = t[0]!;
  const parts = t.slice(1).split(delim);
  if (parts.length < 6) return undefined;
  const [name, type, offset, magic, mask, interpreter, flags = ''] = parts as [
    string,
    string,
    string,
    string,
    string,
    string,
    string | undefined,
  ];
  const reg: BinfmtRegistration = { name, type, offset, magic, mask, interpreter, flags, source };
  if (type === 'M') {
    const platform = elfPlatformOf(
      decodeBinfmtField(magic),
      mask === '' ? undefined : decodeBinfmtField(mask),
      offset === '' ? 0 : Number(offset),
    );
    if (platform) reg.platform = platform;
  }
  return reg;
}

/** The line to write to `register`: the same handler with the F flag added. */
export function registrationLine(r: BinfmtRegistration): string {
  const flags = r.flags.includes('F') ? r.flags : `${r.flags}F`;
  return `:${r.name}:${r.type}:${r.offset}:${r.magic}:${r.mask}:${r.interpreter}:${flags}`;
}

/** Every qemu-*.conf registration installed by qemu-user-static (ELF handlers with a known platform). */
export async function installedQemuHandlers(confDir = BINFMT_CONF_DIR): Promise<BinfmtRegistration[]> {
  const names = (await readdir(confDir).catch(() => [] as string[])).filter((n) => /^qemu-.*\.conf$/.test(n));
  const out: BinfmtRegistration[] = [];
  for (const n of names.sort()) {
    const source = join(confDir, n);
    for (const line of (await readFile(source, 'utf8')).split('\n')) {
      const r = parseBinfmtConfLine(line, source);
      if (r?.platform) out.push(r);
    }
  }
  return out;
}

export interface SetupEmulationOptions {
  /** Only these platforms (default: every installed handler for a foreign platform). */
  platforms?: readonly Platform[];
  confDir?: string;
  binfmtDir?: string;
  /** The native platform, whose code is never handed to an emulator (default: this machine's). */
  host?: Platform;
}

export interface SetupEmulationResult {
  /** Whether binfmt_misc had to be mounted. */
  mounted: boolean;
  registered: Array<{ name: string; platform: Platform; interpreter: string; flags: string }>;
  /** Handlers already registered with the F flag, left as they were. */
  present: Array<{ name: string; platform: Platform }>;
}

const execFileP = promisify(execFile);

export async function setupEmulation(opts: SetupEmulationOptions = {}): Promise<SetupEmulationResult> {
  const binfmtDir = opts.binfmtDir ?? BINFMT_DIR;
  const confDir = opts.confDir ?? BINFMT_CONF_DIR;
  if (process.getuid?.() !== 0) {
    throw new PackfarmError(
      'EMULATION_NEEDS_ROOT',
      'setting up emulation registers binfmt_misc handlers with the kernel, which needs root',
      { hint: 'run it as root: sudo packfarm node setup-emulation' },
    );
  }
  const native = compatiblePlatforms(opts.host ?? hostPlatform());
  const installed = (await installedQemuHandlers(confDir)).filter(
    (r) => r.platform && !native.some((p) => platformsEqual(p, r.platform!)),
  );
  const wanted = opts.platforms
    ? installed.filter((r) =>
        opts.platforms!.some((p) =>
          compatiblePlatforms(r.platform!)
            .filter((c) => c.architecture === r.platform!.architecture)
            .some((c) => platformsEqual(c, p)),
        ),
      )
    : installed;
  const missing = (opts.platforms ?? []).filter(
    (p) =>
      !native.some((n) => platformsEqual(n, p)) &&
      !wanted.some((r) =>
        compatiblePlatforms(r.platform!)
          .filter((c) => c.architecture === r.platform!.architecture)
          .some((c) => platformsEqual(c, p)),
      ),
  );
  if (installed.length === 0 || missing.length > 0) {
    throw new PackfarmError(
      'QEMU_MISSING',
      installed.length === 0
        ? `no qemu-user-static handlers in ${confDir}`
        : `no qemu-user-static handler in ${confDir} for ${missing.map(formatPlatform).join(', ')}`,
      { hint: 'install the emulators: apt-get install qemu-user-static' },
    );
  }

  let mounted = false;
  if (!(await exists(join(binfmtDir, 'register')))) {
    try {
      await execFileP('mount', ['-t', 'binfmt_misc', 'binfmt_misc', binfmtDir]);
    } catch (err) {
      throw new PackfarmError(
        'BINFMT_MOUNT_FAILED',
        `cannot mount binfmt_misc on ${binfmtDir}: ${stderrOf(err)}`,
        {
          hint: 'in a container, start it with --privileged or mount binfmt_misc on the host',
          cause: err,
        },
      );
    }
    mounted = true;
  }

  const current = await readBinfmt(binfmtDir);
  const result: SetupEmulationResult = { mounted, registered: [], present: [] };
  for (const r of wanted) {
    const platform = r.platform!;
    if (!(await exists(r.interpreter))) {
      throw new PackfarmError('QEMU_MISSING', `${r.source}: interpreter ${r.interpreter} does not exist`, {
        hint: 'reinstall the emulators: apt-get install --reinstall qemu-user-static',
      });
    }
    const existing = current.entries.find((e) => e.name === r.name);
    if (existing?.enabled && existing.fixBinary && existing.interpreter === r.interpreter) {
      result.present.push({ name: r.name, platform });
      continue;
    }
    // A handler of that name without F (or disabled, or another interpreter) is replaced.
    if (existing) await writeFile(join(binfmtDir, r.name), '-1');
    const line = registrationLine(r);
    try {
      await writeFile(join(binfmtDir, 'register'), line);
    } catch (err) {
      throw new PackfarmError(
        'BINFMT_REGISTER_FAILED',
        `cannot register ${r.name} (${r.source}) in ${binfmtDir}/register: ${(err as Error).message}`,
        {
          cause: err,
          hint: 'another handler may already claim the same magic; see ls /proc/sys/fs/binfmt_misc',
        },
      );
    }
    result.registered.push({
      name: r.name,
      platform,
      interpreter: r.interpreter,
      flags: line.slice(line.lastIndexOf(':') + 1),
    });
  }
  if (!current.enabled && current.mounted) await writeFile(join(binfmtDir, 'status'), '1');
  return result;
}

async function exists(path: string): Promise<boolean> {
  return access(path).then(
    () => true,
    () => false,
  );
}

function stderrOf(err: unknown): string {
  const e = err as { stderr?: string; message?: string };
  return (e.stderr || e.message || String(err)).trim();
}
