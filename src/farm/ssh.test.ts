import { describe, expect, it } from 'vitest';
import { shellQuote, sshArgv, sshFailure } from './ssh.js';

const node = { name: 'pi', uri: 'ssh://ci@10.0.0.7:2222' };

describe('sshArgv', () => {
  it('adds only BatchMode, the URI parts and the node config: the user ssh config decides the rest', () => {
    expect(sshArgv({ name: 'h', uri: 'ssh://h.lan' }, ['node', 'serve', '--stdio'])).toEqual([
      '-o',
      'BatchMode=yes',
      '-T',
      '--',
      'h.lan',
      'packfarm node serve --stdio',
    ]);
    expect(
      sshArgv(
        { ...node, identity: '/k/id', ssh_options: ['ConnectTimeout=5'], command: '/opt/pf/bin/packfarm' },
        ['node', 'serve', '--stdio', '--max-jobs', '2'],
      ),
    ).toEqual([
      '-o',
      'BatchMode=yes',
      '-T',
      '-p',
      '2222',
      '-l',
      'ci',
      '-i',
      '/k/id',
      '-o',
      'IdentitiesOnly=yes',
      '-o',
      'ConnectTimeout=5',
      '--',
      '10.0.0.7',
      '/opt/pf/bin/packfarm node serve --stdio --max-jobs 2',
    ]);
  });

  it('quotes for the remote shell', () => {
    expect(shellQuote('plain/path-1.2')).toBe('plain/path-1.2');
    expect(shellQuote("it's here")).toBe(`'it'\\''s here'`);
  });
});

describe('sshFailure', () => {
  const exit255 = { code: 255, signal: null };
  it('names the node and explains a wrong host key', () => {
    const e = sshFailure(
      node,
      exit255,
      '@@@ WARNING: REMOTE HOST IDENTIFICATION HAS CHANGED! @@@\nHost key verification failed.\n',
    );
    expect(e.code).toBe('NODE_HOST_KEY');
    expect(e.message).toMatch(
      /^node pi \(ssh:\/\/ci@10\.0\.0\.7:2222\): ssh refused the node's host key: .*Host key verification failed\./,
    );
    expect(e.hint).toContain('known_hosts');
  });

  it('a refused key, an unreachable host and a missing packfarm each get their own code', () => {
    expect(sshFailure(node, exit255, 'ci@10.0.0.7: Permission denied (publickey).\n').code).toBe('NODE_AUTH');
    const refused = sshFailure(
      node,
      exit255,
      'ssh: connect to host 10.0.0.7 port 2222: Connection refused\n',
    );
    expect(refused.code).toBe('NODE_UNREACHABLE');
    expect(refused.message).toContain('Connection refused');
    const missing = sshFailure(
      node,
      { code: 127, signal: null },
      'bash: line 1: packfarm: command not found\n',
    );
    expect(missing.code).toBe('NODE_NO_PACKFARM');
    expect(missing.hint).toContain('--command');
  });
});
