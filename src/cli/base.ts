import type { Command } from 'commander';
import { type BaseEvent, createBaseImages } from '../builder/base/create.js';
import { type BaseFlags, loadBaseDefinition } from '../builder/base/definition.js';
import { insecureRegistriesFrom } from '../image/transport.js';
import { PackfarmError } from '../util/errors.js';
import { resolveCreationTime } from '../util/time.js';
import { type CliIO, collect } from './output.js';

function list(value: string, previous: string[] = []): string[] {
  return [
    ...previous,
    ...value
      .split(',')
      .map((s) => s.trim())
      .filter((s) => s !== ''),
  ];
}

/** `packfarm base create`: Debian build and run images for several architectures, without a container engine. */
export function registerBaseCommands(program: Command, io: CliIO): void {
  const base = program.command('base').description('Make CNB base images (build + run) from Debian packages');
  base
    .command('create')
    .description(
      'Build a build image and a run image for each architecture from Debian packages (resolved with apt, no container engine) and publish each as an image index',
    )
    .argument('[definition]', 'a base.toml (e.g. builders/debian-12/base.toml); flags override its fields')
    .option('--distro <name:version>', 'debian:11, debian:12 or debian:13 (default debian:12)')
    .option('--arch <list>', 'architectures, comma-separated: amd64,arm64,ppc64le,s390x,arm/v7,386', list)
    .option('--packages <list>', 'build image packages, comma-separated', list)
    .option('--run-packages <list>', 'run image packages, comma-separated', list)
    .option('--essential <which>', 'add every Essential: yes package to: build (default), run, both or none')
    .option('--id <id>', 'io.buildpacks.base.id (default io.packfarm.debian-<version>)')
    .option('--build-tag <ref>', 'where the build image index goes: REGISTRY/REPO:TAG or oci:DIR[:TAG]')
    .option('--run-tag <ref>', 'where the run image index goes: REGISTRY/REPO:TAG or oci:DIR[:TAG]')
    .option('--refresh', 'refresh the package lists even when they are recent')
    .option(
      '--creation-time <now|unix>',
      'layer mtimes and config created (default SOURCE_DATE_EPOCH or 1980-01-01T00:00:01Z)',
    )
    .option('--insecure-registry <host>', 'registry reached over plain HTTP (repeatable)', collect)
    .option('--json', 'print events and the result as JSON lines')
    .action(
      async (
        file: string | undefined,
        o: {
          distro?: string;
          arch?: string[];
          packages?: string[];
          runPackages?: string[];
          essential?: string;
          id?: string;
          buildTag?: string;
          runTag?: string;
          refresh?: boolean;
          creationTime?: string;
          insecureRegistry?: string[];
          json?: boolean;
        },
      ) => {
        const flags: BaseFlags = {};
        if (o.distro) flags.distro = o.distro;
        if (o.arch) flags.arch = o.arch;
        if (o.packages) flags.packages = o.packages;
        if (o.runPackages) flags.runPackages = o.runPackages;
        if (o.buildTag) flags.buildTag = o.buildTag;
        if (o.runTag) flags.runTag = o.runTag;
        if (o.id) flags.id = o.id;
        if (o.essential !== undefined) {
          const e = { build: [true, false], run: [false, true], both: [true, true], none: [false, false] }[
            o.essential
          ];
          if (!e)
            throw new PackfarmError(
              'INVALID_ARGS',
              `--essential: "${o.essential}" is not build, run, both or none`,
            );
          flags.essential = { build: e[0]!, run: e[1]! };
        }
        const definition = await loadBaseDefinition(file, flags);
        const onEvent = (e: BaseEvent) => {
          if (o.json) {
            io.err(JSON.stringify(e));
            return;
          }
          const where = e.type === 'index' ? '' : e.kind ? `[${e.arch} ${e.kind}]` : `[${e.arch}]`;
          switch (e.type) {
            case 'progress':
              io.err(`${where} ${e.message}`);
              break;
            case 'handled':
              break;
            case 'warning':
              io.err(`${where} warning: ${e.package ? `${e.package}: ` : ''}${e.message}`);
              break;
            case 'image':
              io.err(
                `${where} ${e.platform} ${e.digest} (${e.packages} packages, layer ${e.layerSize} bytes)`,
              );
              break;
            case 'index':
              break;
          }
        };
        const result = await createBaseImages({
          definition,
          creationTime: resolveCreationTime(o.creationTime),
          insecureRegistries: insecureRegistriesFrom(o.insecureRegistry ?? []),
          ...(o.refresh ? { refresh: true } : {}),
          onEvent,
        });
        if (o.json) {
          io.out(JSON.stringify(result));
          return;
        }
        io.out(`build image: ${result.build.reference}@${result.build.digest}`);
        io.out(`run image:   ${result.run.reference}@${result.run.digest}`);
      },
    );
}
