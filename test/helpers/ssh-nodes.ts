import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { type AddressInfo, connect, createServer } from 'node:net';
import { join } from 'node:path';
import { execa } from 'execa';
import type { FarmNodeConfig } from '../../src/farm/config.js';

/**
 * Real farm nodes for tests: each an OpenSSH server (Debian's sshd) on its own loopback address and a free
 * port, with a generated host key, one generated user key allowed to log in as this user, a private
 * known_hosts, and its own packfarm data dir. The node command runs a given packfarm entry script (the
 * test's compiled copy of this checkout) with PACKFARM_HOME set to the node's data dir, and records the pid
 * of each `node serve` it starts (so a test can kill exactly that process).
 *
 *   const farm = await startSshNodes({ dir, count: 2, entry });   // nodes on 127.0.0.2, 127.0.0.3
 *   farm.nodes[0].config   // a FarmNodeConfig: ssh://root@127.0.0.2:PORT, identity, known_hosts option
 *   await farm.stop();
 */
export interface SshNode {
  name: string;
  address: string;
  port: number;
  dataDir: string;
  config: FarmNodeConfig;
  /** pids of the `node serve` processes started on this node, in order. */
  servePids(): Promise<number[]>;
  stop(): Promise<void>;
}

export interface SshFarm {
  nodes: SshNode[];
  userKey: string;
  knownHosts: string;
  stop(): Promise<void>;
}

const SSHD = '/usr/sbin/sshd';

async function freePort(address: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, address, () => {
      const port = (srv.address() as AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitForPort(
  address: string,
  port: number,
  proc: ChildProcess,
  log: () => string,
): Promise<void> {
  for (let i = 0; i < 200; i++) {
    if (proc.exitCode !== null) throw new Error(`sshd on ${address}:${port} exited: ${log()}`);
    const ok = await new Promise<boolean>((resolve) => {
      const s = connect(port, address);
      s.once('connect', () => {
        s.destroy();
        resolve(true);
      });
      s.once('error', () => resolve(false));
    });
    if (ok) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`sshd on ${address}:${port} did not start listening: ${log()}`);
}

export async function startSshNodes(opts: {
  dir: string;
  count: number;
  /** The packfarm entry script the nodes run (node ENTRY …). */
  entry: string;
  /** First loopback address's last byte (default 2: 127.0.0.2, .3, …). */
  firstAddress?: number;
}): Promise<SshFarm> {
  if (!existsSync(SSHD))
    throw new Error(`${SSHD} is missing: apt-get install openssh-server (scripts/ensure-tools.mjs)`);
  await mkdir('/run/sshd', { recursive: true, mode: 0o755 });
  await mkdir(opts.dir, { recursive: true });
  const userKey = join(opts.dir, 'user_key');
  await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'packfarm-test-user', '-f', userKey]);
  const knownHosts = join(opts.dir, 'known_hosts');
  const known: string[] = [];
  const nodes: SshNode[] = [];
  const procs: ChildProcess[] = [];
  for (let i = 0; i < opts.count; i++) {
    const address = `127.0.0.${(opts.firstAddress ?? 2) + i}`;
    const dir = join(opts.dir, `node${i + 1}`);
    await mkdir(dir, { recursive: true });
    const hostKey = join(dir, 'host_key');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', `node${i + 1}`, '-f', hostKey]);
    await writeFile(join(dir, 'authorized_keys'), await readFile(`${userKey}.pub`));
    const port = await freePort(address);
    const config = join(dir, 'sshd_config');
    await writeFile(
      config,
      [
        `ListenAddress ${address}:${port}`,
        `HostKey ${hostKey}`,
        `AuthorizedKeysFile ${join(dir, 'authorized_keys')}`,
        `PidFile ${join(dir, 'sshd.pid')}`,
        'UsePAM no',
        'StrictModes no',
        'PermitRootLogin prohibit-password',
        'PasswordAuthentication no',
        'KbdInteractiveAuthentication no',
        'PubkeyAuthentication yes',
        'LogLevel ERROR',
        '',
      ].join('\n'),
    );
    let log = '';
    const proc = spawn(SSHD, ['-D', '-e', '-f', config], { stdio: ['ignore', 'ignore', 'pipe'] });
    proc.stderr?.on('data', (c: Buffer) => {
      log = (log + c.toString()).slice(-4000);
    });
    procs.push(proc);
    await waitForPort(address, port, proc, () => log);
    known.push(`[${address}]:${port} ${(await readFile(`${hostKey}.pub`, 'utf8')).trim()}`);
    const dataDir = join(dir, 'data');
    const pids = join(dir, 'serve.pids');
    const name = `node${i + 1}`;
    nodes.push({
      name,
      address,
      port,
      dataDir,
      config: {
        name,
        uri: `ssh://root@${address}:${port}`,
        identity: userKey,
        // The shell's pid is the serve process's (exec), recorded so a test can kill exactly that one.
        command: `echo $$ >> ${pids}; exec env PACKFARM_HOME=${dataDir} ${process.execPath} ${opts.entry}`,
        ssh_options: [
          `UserKnownHostsFile=${knownHosts}`,
          'GlobalKnownHostsFile=/dev/null',
          'StrictHostKeyChecking=yes',
        ],
      },
      servePids: async () =>
        (await readFile(pids, 'utf8').catch(() => '')).split('\n').filter(Boolean).map(Number),
      stop: async () => {
        if (proc.exitCode === null) {
          proc.kill('SIGTERM');
          await new Promise((r) => proc.once('close', r));
        }
      },
    });
  }
  await writeFile(knownHosts, `${known.join('\n')}\n`);
  return {
    nodes,
    userKey,
    knownHosts,
    stop: async () => {
      await Promise.all(nodes.map((n) => n.stop()));
      await rm(opts.dir, { recursive: true, force: true });
    },
  };
}
