import type { Command } from 'commander';
import { type Platform, formatPlatform, parsePlatform } from '../oci/platform.js';
import { type CliIO, collect } from './output.js';

/** `packfarm node info` and `packfarm node setup-emulation`: what this machine can build, and enabling qemu. */
export function registerNodeCommands(program: Command, io: CliIO): void {
  const node = program.command('node').description('This build node: its platforms, runtime and emulation');
  node
    .command('info')
    .description('Print the native and emulated platforms, the OCI runtime (runc) version and the CPUs')
    .option('--runtime <path>', 'the OCI runtime to ask (default: /usr/sbin/runc, else runc on PATH)')
    .option('--json', 'print JSON')
    .action(async (o: { runtime?: string; json?: boolean }) => {
      const info = await (await import('../exec/node-info.js')).nodeInfo(
        o.runtime ? { runtime: o.runtime } : {},
      );
      if (o.json) {
        io.out(
          JSON.stringify(
            {
              ...info,
              platforms: {
                native: info.platforms.native.map(formatPlatform),
                emulated: info.platforms.emulated.map((e) => ({
                  ...e,
                  platform: formatPlatform(e.platform),
                })),
                binfmt: info.platforms.binfmt,
              },
            },
            null,
            2,
          ),
        );
        return;
      }
      const m = info.platforms;
      const lines = [
        `node:      ${info.hostname}`,
        `native:    ${m.native.map(formatPlatform).join(', ')}`,
        `emulated:  ${
          m.emulated.length === 0
            ? m.binfmt.mounted
              ? 'none (no binfmt_misc handler for a foreign architecture)'
              : 'none (binfmt_misc is not mounted)'
            : m.emulated
                .map(
                  (e) =>
                    `${formatPlatform(e.platform)} (${e.handler}${e.usableInContainers ? '' : ', no F flag: not usable in containers'})`,
                )
                .join(', ')
        }`,
        `runtime:   ${info.runtime.path} ${info.runtime.version ? `${info.runtime.version} (OCI runtime spec ${info.runtime.spec ?? '?'})` : info.runtime.error}`,
        `root:      ${info.root ? 'yes' : 'no (the oci executor needs root; see spec/exec.md)'}`,
        `cpus:      ${info.cpus}`,
        `memory:    ${(info.memoryBytes / 2 ** 30).toFixed(1)} GiB`,
      ];
      if (m.emulated.length === 0 || m.emulated.some((e) => !e.usableInContainers))
        lines.push(
          'hint: register the qemu-user-static emulators as root with: packfarm node setup-emulation',
        );
      io.out(lines.join('\n'));
    });

  node
    .command('setup-emulation')
    .description(
      'As root: mount binfmt_misc if needed and register the installed qemu-user-static handlers with the F flag',
    )
    .option(
      '--platform <os/arch[/variant]>',
      'only this platform (repeatable; default: every installed handler)',
      collect,
    )
    .option('--json', 'print JSON')
    .action(async (o: { platform?: string[]; json?: boolean }) => {
      const platforms: Platform[] | undefined = o.platform
        ?.flatMap((p) => p.split(','))
        .map((p) => parsePlatform(p, '--platform'));
      const r = await (await import('../exec/emulation.js')).setupEmulation(platforms ? { platforms } : {});
      if (o.json) {
        io.out(
          JSON.stringify(
            {
              mounted: r.mounted,
              registered: r.registered.map((h) => ({ ...h, platform: formatPlatform(h.platform) })),
              present: r.present.map((h) => ({ ...h, platform: formatPlatform(h.platform) })),
            },
            null,
            2,
          ),
        );
        return;
      }
      const lines: string[] = [];
      if (r.mounted) lines.push('mounted binfmt_misc on /proc/sys/fs/binfmt_misc');
      for (const h of r.registered)
        lines.push(
          `registered ${h.name}: ${formatPlatform(h.platform)} → ${h.interpreter} (flags ${h.flags})`,
        );
      for (const h of r.present) lines.push(`already registered ${h.name}: ${formatPlatform(h.platform)}`);
      if (r.registered.length === 0 && r.present.length === 0) lines.push('nothing to register');
      io.out(lines.join('\n'));
    });
}
