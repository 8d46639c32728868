import { rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import type { Command } from 'commander';
import { buildpackagePlatforms, readBuildpackage } from '../builder/buildpackage.js';
import { newBuildpack } from '../builder/new-buildpack.js';
import { packageBuildpack } from '../builder/package.js';
import { formatPlatform } from '../oci/platform.js';
import { appImageLocation, formatImageLocation, insecureRegistriesFrom } from '../image/transport.js';
import { PackfarmError } from '../util/errors.js';
import { resolveCreationTime } from '../util/time.js';
import { type CliIO, collect } from './output.js';
import { makeTempDir } from '../util/tempdir.js';

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
          throw new PackfarmError('INVALID_ARGS', `--format: "${o.format}" is not image or file`);
        const scratch = await makeTempDir(tmpdir(), 'package');
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

  buildpack
    .command('inspect')
    .description(
      'Show a buildpackage’s buildpacks, their APIs, orders and targets, per platform (from its labels)',
    )
    .argument('<name>', 'docker://IMAGE (or a registry reference), oci:DIR[:TAG] or a .cnb file')
    .option('--insecure-registry <host>', 'registry reached over plain HTTP (repeatable)', collect)
    .option('--json', 'print JSON')
    .action(async (name: string, o: { insecureRegistry?: string[]; json?: boolean }) => {
      const uri =
        name.startsWith('oci:') || name.startsWith('docker://') || name.endsWith('.cnb')
          ? name
          : `docker://${name}`;
      const insecureRegistries = insecureRegistriesFrom(o.insecureRegistry ?? []);
      const scratch = await makeTempDir(tmpdir(), 'bp-inspect');
      try {
        const where = await buildpackagePlatforms(uri, { cwd: process.cwd(), scratch, insecureRegistries });
        const platforms = [];
        for (const platform of where.platforms) {
          const pkg = await readBuildpackage(where.location, {
            cwd: process.cwd(),
            scratch,
            platform,
            insecureRegistries,
            source: name,
          });
          platforms.push({
            platform: formatPlatform(platform),
            id: pkg.id,
            version: pkg.version,
            buildpacks: pkg.modules.map((m) => ({ id: m.id, version: m.version, ...m.info })),
          });
        }
        if (o.json) {
          io.out(JSON.stringify({ name, platforms }));
          return;
        }
        const lines: string[] = [];
        for (const p of platforms) {
          lines.push(`${p.platform}: ${p.id}@${p.version}`);
          for (const b of p.buildpacks) {
            lines.push(`  ${b.id}@${b.version} (api ${b.api})${b.name ? ` ${b.name}` : ''}`);
            for (const [i, g] of (b.order ?? []).entries())
              lines.push(
                `    group #${i + 1}: ${g.group.map((e) => `${e.id}@${e.version}${e.optional ? ' (optional)' : ''}`).join(', ')}`,
              );
            if (b.targets && b.targets.length > 0)
              lines.push(
                `    targets: ${b.targets.map((t) => [t.os, t.arch, t.variant].filter(Boolean).join('/')).join(', ')}`,
              );
          }
        }
        io.out(lines.join('\n'));
      } finally {
        await rm(scratch, { recursive: true, force: true });
      }
    });
  buildpack
    .command('new')
    .description('Write a new buildpack (buildpack.toml, bin/detect, bin/build in POSIX sh) to start from')
    .argument('<id>', 'the buildpack id, e.g. acme/hello')
    .option('--path <dir>', 'where to write it (default: the id with / as _)')
    .option('--api <version>', 'Buildpack API', '0.12')
    .option('--version <version>', 'buildpack version', '0.0.1')
    .option(
      '-t, --targets <os/arch[/variant]>',
      'a target (repeatable; default linux/amd64 and linux/arm64)',
      collect,
    )
    .action(async (id: string, o: { path?: string; api: string; version: string; targets?: string[] }) => {
      const dir = await newBuildpack({
        id,
        dir: o.path ?? id.replace(/\//g, '_'),
        api: o.api,
        version: o.version,
        ...(o.targets ? { targets: o.targets } : {}),
      });
      io.out(`buildpack ${id}@${o.version} written to ${dir}`);
    });
}
