import type { Command } from 'commander';
import type { EnvironmentReport } from '../api/report.js';
import type { PruneReport } from '../api/prune.js';
import { type CliIO, formatBytes } from './output.js';

/** `packfarm version`, `packfarm report`, `packfarm prune`: about packfarm and its data dir. */
export function registerSystemCommands(program: Command, io: CliIO, version: string): void {
  program
    .command('version')
    .description('Print the packfarm version')
    .action(() => io.out(version));

  program
    .command('report')
    .description(
      'Print versions, data dir, OCI runtime, binfmt_misc handlers and credential sources, for bug reports',
    )
    .option('--json', 'print one JSON document')
    .addHelpText(
      'after',
      '\nNo secrets are printed: credential sources are listed with the registries\nthey name.',
    )
    .action(async (f: { json?: boolean }) => {
      const { environmentReport } = await import('../api/report.js');
      const r = await environmentReport({ version });
      if (f.json) io.out(JSON.stringify(r, null, 2));
      else printEnvironment(io, r);
    });

  program
    .command('prune')
    .description(
      'Remove build dirs, caches and unpacked root filesystems under the data dir, and print what was freed',
    )
    .option('--older-than <age>', 'only what was last used longer ago than this: 30m, 12h, 7d, 2w')
    .option('--dry-run', 'print what would be removed, remove nothing')
    .option('--json', 'print the result as JSON')
    .addHelpText(
      'after',
      [
        '',
        'Removes <data dir>/builds/*, <data dir>/cache/* and <data dir>/rootfs/* that',
        'no running build uses (with --older-than, only those unused for that long).',
        'Images and manifest lists are never removed.',
      ].join('\n'),
    )
    .action(async (f: { olderThan?: string; dryRun?: boolean; json?: boolean }) => {
      const { prune, parseAge } = await import('../api/prune.js');
      const { packfarmDataDir } = await import('../image/data-dir.js');
      const r = await prune({
        dataDir: packfarmDataDir(),
        ...(f.olderThan !== undefined ? { olderThanMs: parseAge(f.olderThan) } : {}),
        dryRun: f.dryRun === true,
      });
      if (f.json) io.out(JSON.stringify(r, null, 2));
      else printPrune(io, r);
    });
}

function printPrune(io: CliIO, r: PruneReport): void {
  const verb = r.dryRun ? 'would remove' : 'removed';
  for (const e of r.removed)
    io.out(`${verb} ${e.kind} ${e.path} (${formatBytes(e.bytes)}, last used ${e.lastUsed})`);
  for (const p of r.inUse) io.out(`kept ${p} (in use by a running build)`);
  const count = (k: string) => r.removed.filter((e) => e.kind === k).length;
  io.out(
    `${r.dryRun ? 'Would free' : 'Freed'} ${formatBytes(r.freedBytes)}: ${count('build')} build dir(s), ${count('cache')} cache(s), ${count('rootfs')} root filesystem(s) under ${r.dataDir}`,
  );
}

function printEnvironment(io: CliIO, r: EnvironmentReport): void {
  io.out(`packfarm:       ${r.packfarm}`);
  io.out(`node:           ${r.node}`);
  io.out(`platform:       ${r.platform}`);
  io.out(`platform APIs:  ${r.apis.platform.join(', ')}`);
  io.out(`buildpack APIs: ${r.apis.buildpack.join(', ')}`);
  const b = r.dataDir.bytes;
  io.out(
    `data dir:       ${r.dataDir.path} (images ${formatBytes(b.images ?? 0)}, builds ${formatBytes(b.build ?? 0)}, caches ${formatBytes(b.cache ?? 0)}, rootfs ${formatBytes(b.rootfs ?? 0)})`,
  );
  io.out(
    `runc:           ${r.runc.path ? `${r.runc.path} (${r.runc.version ?? 'version unknown'})` : 'not found'}`,
  );
  if (!r.binfmt.available) io.out('binfmt_misc:    not mounted (no foreign-architecture emulation)');
  else if (r.binfmt.entries.length === 0) io.out('binfmt_misc:    no handler for an ELF architecture');
  else
    io.out(
      `binfmt_misc:    ${r.binfmt.enabled ? '' : '(facility disabled) '}${r.binfmt.entries.map((e) => `${e.name} ${e.platform}${e.enabled ? '' : ' (disabled)'}${e.flags.includes('F') ? '' : ' (no F flag)'}`).join(', ')}`,
    );
  for (const [t, v] of Object.entries(r.tools)) io.out(`${`${t}:`.padEnd(16)}${v ?? 'not found'}`);
  io.out('credentials (in lookup order):');
  for (const c of r.credentials) {
    if (!c.present) {
      io.out(`  ${c.source}: absent`);
      continue;
    }
    const parts = [
      c.registries.length ? `registries ${c.registries.join(', ')}` : 'no registries',
      ...(c.helpers.length ? [`helpers ${c.helpers.join(', ')}`] : []),
    ];
    io.out(`  ${c.source}: ${parts.join('; ')}`);
  }
}
