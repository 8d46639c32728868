import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import type { Command } from 'commander';
import { type BuilderEvent, createBuilder } from '../builder/create.js';
import { inspectBuilder } from '../builder/inspect.js';
import {
  appImageLocation,
  formatImageLocation,
  insecureRegistriesFrom,
  openImage,
} from '../image/transport.js';
import { resolveCreationTime } from '../util/time.js';
import { type CliIO, collect } from './output.js';
import { makeTempDir } from '../util/tempdir.js';

/** `packfarm builder create|inspect`: pack-compatible builder images, one per target (an index for several). */
export function registerBuilderCommands(program: Command, io: CliIO): void {
  const builder = program
    .command('builder')
    .description('Create and inspect builder images (pack’s builder.toml)');
  builder
    .command('create')
    .description(
      'Build a builder image from builder.toml: the build image plus a layer per buildpack and /cnb/order.toml, run.toml, stack.toml; one image per target, an index for several',
    )
    .argument(
      '<image>',
      'where the builder goes: a registry reference with --publish, oci:DIR[:TAG], or a local name',
    )
    .requiredOption('-c, --config <file>', 'pack’s builder.toml')
    .option(
      '-t, --target <os/arch[/variant]>',
      'a target platform (repeatable; default: builder.toml [[targets]], else every platform of the build image)',
      collect,
    )
    .option(
      '--publish',
      'write to the registry IMAGE names (without it a bare name goes to the local layout)',
    )
    .option(
      '--creation-time <now|unix>',
      'layer mtimes and config created (default SOURCE_DATE_EPOCH or 1980-01-01T00:00:01Z)',
    )
    .option('--insecure-registry <host>', 'registry reached over plain HTTP (repeatable)', collect)
    .option('--json', 'print events and the result as JSON')
    .action(
      async (
        image: string,
        o: {
          config: string;
          target?: string[];
          publish?: boolean;
          creationTime?: string;
          insecureRegistry?: string[];
          json?: boolean;
        },
      ) => {
        const scratch = await makeTempDir(tmpdir(), 'builder');
        const onEvent = (e: BuilderEvent) => {
          if (o.json) return io.err(JSON.stringify(e));
          if (e.type === 'note') io.err(`note: ${e.message}`);
          else if (e.type === 'buildpack') io.err(`buildpack ${e.id}@${e.version}: layer ${e.diffId}`);
          else if (e.type === 'target') io.err(`${e.platform}: ${e.digest}`);
        };
        try {
          const result = await createBuilder({
            image: formatImageLocation(
              appImageLocation(image, { publish: o.publish ?? false, source: 'builder image' }),
            ),
            config: o.config,
            ...(o.target ? { targets: o.target } : {}),
            insecureRegistries: insecureRegistriesFrom(o.insecureRegistry ?? []),
            creationTime: resolveCreationTime(o.creationTime),
            scratchDir: scratch,
            onEvent,
          });
          if (o.json) io.out(JSON.stringify(result));
          else
            io.out(
              `builder ${result.reference}@${result.digest} (${result.targets.length} target${result.targets.length > 1 ? 's' : ''})`,
            );
        } finally {
          await rm(scratch, { recursive: true, force: true });
        }
      },
    );
  builder
    .command('inspect')
    .description(
      'Show a builder image’s buildpacks, detection order, run images and targets (from its labels)',
    )
    .argument('<image>', 'a registry reference, oci:DIR[:TAG], or a local name')
    .option('--publish', 'read IMAGE from the registry even when it is a bare name')
    .option('--insecure-registry <host>', 'registry reached over plain HTTP (repeatable)', collect)
    .option('--json', 'print JSON')
    .action(async (image: string, o: { publish?: boolean; insecureRegistry?: string[]; json?: boolean }) => {
      const loc = appImageLocation(image, {
        publish: o.publish ?? image.startsWith('docker://'),
        source: 'builder image',
      });
      const opened = await openImage(loc, {
        insecureRegistries: insecureRegistriesFrom(o.insecureRegistry ?? []),
      });
      const info = await inspectBuilder(opened);
      if (o.json) {
        io.out(JSON.stringify(info));
        return;
      }
      const lines: string[] = [`Builder: ${info.reference}@${info.digest}`];
      lines.push(`Targets: ${info.platforms.map((p) => p.platform).join(', ')}`);
      for (const p of info.platforms) {
        lines.push('', `Platform ${p.platform} (${p.digest})`);
        if (p.description) lines.push(`  Description: ${p.description}`);
        if (p.createdBy) lines.push(`  Created by: ${p.createdBy}`);
        if (p.distro) lines.push(`  Distro: ${p.distro.name} ${p.distro.version}`);
        if (p.stackId) lines.push(`  Stack: ${p.stackId}`);
        lines.push('  Run images:');
        for (const r of p.runImages) {
          lines.push(`    ${r.image}`);
          for (const m of r.mirrors) lines.push(`    ${m} (mirror)`);
        }
        lines.push('  Buildpacks:');
        for (const b of p.buildpacks)
          lines.push(
            `    ${b.id}@${b.version ?? '?'}${b.api ? ` (api ${b.api})` : ''}${b.homepage ? ` ${b.homepage}` : ''}`,
          );
        lines.push('  Detection order:');
        p.order.forEach((g, i) => {
          lines.push(`    Group #${i + 1}:`);
          for (const e of g.group)
            lines.push(`      ${e.id}${e.version ? `@${e.version}` : ''}${e.optional ? ' (optional)' : ''}`);
        });
      }
      io.out(lines.join('\n'));
    });
}
