#!/usr/bin/env node
// Makes sure the system tools the integration tests use are present. As root on Debian it installs what is
// missing with apt-get; otherwise it stops and prints the exact command to run. It never skips silently.
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const TOOLS = [
  { bin: 'docker-registry', pkg: 'docker-registry' },
  { bin: 'skopeo', pkg: 'skopeo' },
  { bin: 'umoci', pkg: 'umoci' },
  { bin: 'podman', pkg: 'podman' },
  { bin: 'runc', pkg: 'runc', path: '/usr/sbin/runc' },
  { bin: 'qemu-aarch64-static', pkg: 'qemu-user-static' },
  { bin: 'htpasswd', pkg: 'apache2-utils' },
  { bin: 'busybox', pkg: 'busybox-static', path: '/bin/busybox' },
  { bin: 'openssl', pkg: 'openssl' },
  { bin: 'tar', pkg: 'tar' },
  { bin: 'gzip', pkg: 'gzip' },
  // A YAML parser to read back what `inspect -o yaml` writes (a Python module, found by its path).
  { bin: 'python3-yaml', pkg: 'python3-yaml', path: '/usr/lib/python3/dist-packages/yaml/__init__.py' },
];

function has(tool) {
  if (tool.path && existsSync(tool.path)) return true;
  return spawnSync('sh', ['-c', `command -v ${tool.bin}`], { stdio: 'ignore' }).status === 0;
}

/**
 * Make sure the named tools (default: all the tests use) are present: as root on Debian, install what is
 * missing with apt-get; otherwise print the exact command and return false.
 */
export function ensureTools(names = TOOLS.map((t) => t.bin), purpose = 'packfarm tests') {
  const wanted = TOOLS.filter((t) => names.includes(t.bin));
  const missing = wanted.filter((t) => !has(t));
  if (missing.length === 0) return true;
  const pkgs = [...new Set(missing.map((t) => t.pkg))];
  const cmd = `apt-get update && apt-get install -y ${pkgs.join(' ')}`;
  const isRoot = typeof process.getuid === 'function' && process.getuid() === 0;
  if (!isRoot || !existsSync('/usr/bin/apt-get')) {
    console.error(`${purpose} need: ${missing.map((t) => t.bin).join(', ')}\nrun as root: ${cmd}`);
    return false;
  }
  console.error(`installing for ${purpose}: ${pkgs.join(' ')}`);
  const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
  execFileSync('apt-get', ['update', '-q'], { stdio: 'inherit', env });
  execFileSync('apt-get', ['install', '-y', '-q', ...pkgs], { stdio: 'inherit', env });
  const still = wanted.filter((t) => !has(t));
  if (still.length > 0) {
    console.error(`still missing after install: ${still.map((t) => t.bin).join(', ')}`);
    return false;
  }
  return true;
}

// As a script: every tool the tests use.
if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  if (!ensureTools()) process.exit(1);
  console.error(`test tools present: ${TOOLS.map((t) => t.bin).join(', ')}`);
}
