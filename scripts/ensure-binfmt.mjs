#!/usr/bin/env node
// Makes sure foreign-architecture ELF binaries run here through qemu-user-static (binfmt_misc), so podman can
// run arm64/ppc64le/s390x images. Idempotent: mounts binfmt_misc when needed and registers only the missing
// Debian handlers (/usr/lib/binfmt.d/qemu-*.conf, whose flags include F, so the interpreter works inside
// containers). Needs root for that; otherwise it prints what to run. It never skips silently.
// (The exec branch brings a full emulation setup, src/exec/emulation.ts; this small helper only serves the
// base-image tests until it lands.)
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const BINFMT = '/proc/sys/fs/binfmt_misc';

/** Debian architecture → qemu handler name. */
const HANDLERS = { arm64: 'aarch64', armhf: 'arm', ppc64el: 'ppc64le', s390x: 's390x', i386: 'i386' };

/**
 * Register the qemu handlers for the given Debian architectures (default arm64). Returns true when every one
 * is present and enabled afterwards.
 */
export function ensureBinfmt(arches = ['arm64']) {
  const names = arches.map((a) => HANDLERS[a]).filter(Boolean);
  const missing = () => names.filter((n) => !existsSync(`${BINFMT}/qemu-${n}`));
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  const how = `run as root: apt-get install qemu-user-static && mount -t binfmt_misc binfmt_misc ${BINFMT} && for f in ${names.map((n) => `/usr/lib/binfmt.d/qemu-${n}.conf`).join(' ')}; do cat $f > ${BINFMT}/register; done`;
  if (missing().length === 0) return true;
  if (!isRoot) {
    console.error(
      `foreign-architecture tests need qemu binfmt_misc handlers: ${missing().join(', ')}\n${how}`,
    );
    return false;
  }
  if (!existsSync(`${BINFMT}/register`)) execFileSync('mount', ['-t', 'binfmt_misc', 'binfmt_misc', BINFMT]);
  for (const n of missing()) {
    const conf = `/usr/lib/binfmt.d/qemu-${n}.conf`;
    if (!existsSync(conf)) {
      console.error(`${conf} is missing: apt-get install qemu-user-static`);
      return false;
    }
    try {
      writeFileSync(`${BINFMT}/register`, readFileSync(conf, 'utf8').trim());
    } catch (err) {
      // Someone else registered it meanwhile.
      if (!existsSync(`${BINFMT}/qemu-${n}`)) throw err;
    }
  }
  const still = missing();
  if (still.length > 0) {
    console.error(`binfmt_misc handlers still missing: ${still.join(', ')}\n${how}`);
    return false;
  }
  return true;
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (!ensureBinfmt(process.argv.slice(2).length > 0 ? process.argv.slice(2) : undefined)) process.exit(1);
}
