import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Command } from 'commander';
import { packageBuildpack } from '../builder/package.js';
import { appImageLocation, formatImageLocation, insecureRegistriesFrom } from '../image/transport.js';
import { PackfarmError } from '../util/errors.js';
import { resolveCreationTime } from '../util/time.js';
import { type CliIO, collect } from './output.js';

/** `packfarm buildpack package`: buildpackages (images or .cnb files) from pack's package.toml. */
export function registerBuildpackCommands(program: Command, io: CliIO): void {
  const buildpack = program.command('buildpack').description('Package buildpacks (pack’s package.toml)');
  buildpack
    .command('package')
    .description(
      'Make a buildpackage: one layer per buildpack id@version and pack’s labels; an image (an index for several targets) or a .cnb file',
    )
    .argument(
      '<name>',
      'the image (registry reference with --publish, oci:DIR[:TAG], or a local name) or, with --format file, the .cnb path',
    )
    .requiredOption('-c, --config <file>', 'pack’s package.toml')
    .option('-f, --format <image|file>', 'an image or a .cnb file (an OCI layout in a tar)', 'image')
    .option(
      '-t, --target <os/arch[/variant]>',
      'a target platform (repeatable; default: package.toml [[targets]], else the buildpack’s, else this machine’s)',
      collect,
    )
    .option('--publish', 'write the image to the registry NAME names')
    .option(
      '--creation-time <now|unix>',
      'layer mtimes and config created (default SOURCE_DATE_EPOCH or 1980-01-01T00:00:01Z)',
    )
    .option('--insecure-registry <host>', 'registry reached over plain HTTP (repeatable)', collect)
    .option('--json', 'print the result as JSON')
    .action(
      async (
        name: string,
        o: {
          config: string;
          format: string;
          target?: string[];
          publish?: boolean;
          creationTime?: string;
          insecureRegistry?: string[];
          json?: boolean;
        },
      ) => {
        if (o.format !== 'image' && o.format !== 'file')
          throw new PackfarmError('INVALID_ARGUMENT', `--format: "${o.format}" is not image or file`);
        const scratch = await mkdtemp(join(tmpdir(), 'packfarm-package-'));
        try {
          const result = await packageBuildpack({
            name:
              o.format === 'file'
                ? name
                : formatImageLocation(
                    appImageLocation(name, { publish: o.publish ?? false, source: 'buildpackage' }),
                  ),
            config: o.config,
            format: o.format,
            ...(o.target ? { targets: o.target } : {}),
            insecureRegistries: insecureRegistriesFrom(o.insecureRegistry ?? []),
            creationTime: resolveCreationTime(o.creationTime),
            scratchDir: scratch,
          });
          if (o.json) io.out(JSON.stringify(result));
          else
            io.out(
              `buildpackage ${result.id}@${result.version}: ${result.reference} ${result.digest} (${result.targets.map((t) => t.platform).join(', ')})`,
            );
        } finally {
          await rm(scratch, { recursive: true, force: true });
        }
      },
    );
}
