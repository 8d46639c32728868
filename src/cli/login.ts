import type { Command } from 'commander';
import { insecureRegistriesFrom } from '../image/transport.js';
import { PackfarmError } from '../util/errors.js';
import { type CliIO, INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect } from './output.js';

interface LoginFlags {
  username?: string;
  password?: string;
  passwordStdin?: boolean;
  authfile?: string;
  insecureRegistry?: string[];
}

async function readStdin(): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const c of process.stdin) chunks.push(c as Buffer);
  // Like docker and podman: one trailing newline (from echo) is not part of the password.
  return Buffer.concat(chunks)
    .toString('utf8')
    .replace(/\r?\n$/, '');
}

/** `packfarm login` / `logout`: the containers-auth.json file podman and skopeo log in to. */
export function registerLoginCommands(program: Command, io: CliIO): void {
  program
    .command('login')
    .description(
      'Check credentials with a registry and store them where podman, skopeo and buildah read them',
    )
    .argument('<registry>', 'registry host[:port] (docker.io for Docker Hub)')
    .option('-u, --username <name>', 'user name')
    .option(
      '-p, --password <password>',
      'password (visible to other users in the process list: prefer --password-stdin)',
    )
    .option('--password-stdin', 'read the password from stdin')
    .option(
      '--authfile <file>',
      'credentials file to write (default: $REGISTRY_AUTH_FILE, else the podman default)',
    )
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect)
    .addHelpText(
      'after',
      [
        '',
        'Writes auths["<registry>"] in containers-auth.json: $REGISTRY_AUTH_FILE, else',
        '$XDG_RUNTIME_DIR/containers/auth.json, else /run/containers/<uid>/auth.json',
        '(mode 0600, replaced atomically). Every packfarm command reads',
        'CNB_REGISTRY_AUTH, that file, $XDG_CONFIG_HOME/containers/auth.json, then the',
        'docker config.',
        'Example:',
        '  printf %s "$PASSWORD" | packfarm login reg.example:5000 -u me --password-stdin',
      ].join('\n'),
    )
    .action(async (registry: string, f: LoginFlags) => {
      if (!f.username)
        throw new PackfarmError('INVALID_ARGS', 'login needs --username', {
          hint: `packfarm login ${registry} -u USER --password-stdin`,
        });
      if (f.password !== undefined && f.passwordStdin)
        throw new PackfarmError('INVALID_ARGS', '--password and --password-stdin cannot be used together');
      const password = f.passwordStdin ? await readStdin() : f.password;
      if (password === undefined || password === '')
        throw new PackfarmError('INVALID_ARGS', 'login needs a password: --password-stdin or --password', {
          hint: `printf %s "$PASSWORD" | packfarm login ${registry} -u ${f.username} --password-stdin`,
        });
      const { login } = await import('../registry/login.js');
      const r = await login(registry, {
        username: f.username,
        password,
        insecureRegistries: insecureRegistriesFrom(f.insecureRegistry ?? []),
        ...(f.authfile ? { authFile: f.authfile } : {}),
      });
      io.out(`Login Succeeded: ${r.key} (credentials stored in ${r.authFile})`);
    });

  program
    .command('logout')
    .description('Remove the stored credentials of a registry (from the file `packfarm login` writes)')
    .argument('<registry>', 'registry host[:port]')
    .option('--authfile <file>', 'credentials file (default: $REGISTRY_AUTH_FILE, else the podman default)')
    .action(async (registry: string, f: { authfile?: string }) => {
      const { logout } = await import('../registry/login.js');
      const r = await logout(registry, f.authfile ? { authFile: f.authfile } : {});
      if (!r.removed)
        throw new PackfarmError(
          'NOT_LOGGED_IN',
          `not logged in to ${r.key}: ${r.authFile} has no entry for it`,
          {
            hint: 'credentials in the docker config or CNB_REGISTRY_AUTH are not touched by logout',
          },
        );
      io.out(`Removed login credentials for ${r.key} from ${r.authFile}`);
    });
}
