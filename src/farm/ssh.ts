import { PackfarmError } from '../util/errors.js';
import { type FarmNodeConfig, parseNodeUri } from './config.js';

/**
 * How the coordinator reaches a node over OpenSSH. packfarm adds only what it must — BatchMode (a password
 * prompt becomes an error, never a hang) and what the farm config says (port, user, identity, options) —
 * so the user's ~/.ssh/config, agent, keys and known_hosts apply as for any ssh command. One ssh process per
 * node per build carries every job of that build (the protocol multiplexes them).
 */
export const DEFAULT_NODE_COMMAND = 'packfarm';

export function sshArgv(node: FarmNodeConfig, remoteArgs: readonly string[]): string[] {
  const dest = parseNodeUri(node.uri, `node ${node.name}`);
  if (dest === 'local') throw new Error('sshArgv: the local node is not reached over ssh');
  const argv = ['-o', 'BatchMode=yes', '-T'];
  if (dest.port !== undefined) argv.push('-p', String(dest.port));
  if (dest.user !== undefined) argv.push('-l', dest.user);
  // With an explicit identity, offer only that key (an agent full of keys can exhaust MaxAuthTries first).
  if (node.identity) argv.push('-i', node.identity, '-o', 'IdentitiesOnly=yes');
  for (const o of node.ssh_options ?? []) argv.push('-o', o);
  // The remote side runs this through the login user's shell, as one command line.
  const command = [node.command ?? DEFAULT_NODE_COMMAND, ...remoteArgs.map(shellQuote)].join(' ');
  argv.push('--', dest.host, command);
  return argv;
}

/** Quote for a POSIX shell, leaving plain words as they are. */
export function shellQuote(s: string): string {
  return /^[A-Za-z0-9_@%+=:,./-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;
}

/**
 * The error for an ssh that ended before the node said hello: ssh's own last words (exit 255 is ssh's,
 * anything else the remote command's), with the node named and a hint for the usual causes.
 */
export function sshFailure(
  node: FarmNodeConfig,
  exit: { code: number | null; signal: string | null },
  stderr: string,
): PackfarmError {
  const lines = stderr
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l !== '' && !/^Warning: Permanently added/.test(l));
  const last =
    lines.slice(-3).join(' / ') || (exit.signal ? `killed by ${exit.signal}` : `exit code ${exit.code}`);
  const where = `node ${node.name} (${node.uri})`;
  if (
    /Host key verification failed|REMOTE HOST IDENTIFICATION HAS CHANGED|No .*host key is known/i.test(stderr)
  )
    return new PackfarmError('NODE_HOST_KEY', `${where}: ssh refused the node's host key: ${last}`, {
      hint: `the node's host key is unknown or changed: check it, then add it to known_hosts (ssh-keyscan -p PORT HOST >> ~/.ssh/known_hosts), or fix UserKnownHostsFile in the node's ssh options`,
    });
  if (/Permission denied|Too many authentication failures/i.test(stderr))
    return new PackfarmError('NODE_AUTH', `${where}: the node refused the login: ${last}`, {
      hint: "check the user, the key (--identity) and the node's authorized_keys; packfarm runs ssh with BatchMode=yes, so passwords are not asked",
    });
  if (exit.code === 255)
    return new PackfarmError('NODE_UNREACHABLE', `${where}: ssh failed: ${last}`, {
      hint: `try: ssh ${node.uri.replace(/^ssh:\/\//, '')} true`,
    });
  if (exit.code === 127 || /command not found|No such file or directory/i.test(stderr))
    return new PackfarmError('NODE_NO_PACKFARM', `${where}: packfarm did not start there: ${last}`, {
      hint: 'install packfarm on the node, or give its path with `farm node add … --command PATH`',
    });
  return new PackfarmError('NODE_UNREACHABLE', `${where}: the node ended the connection: ${last}`);
}
