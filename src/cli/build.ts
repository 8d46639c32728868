import type { Command } from 'commander';
import type { BuildReport } from '../api/build.js';
import { packfarmDataDir } from '../image/data-dir.js';
import { PackfarmError } from '../util/errors.js';
import { createLogger } from '../util/log.js';
import { type CliIO, collect, INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP } from './output.js';

interface BuildFlags {
  path: string;
  builder?: string;
  buildpack: string[];
  runImage?: string;
  env: string[];
  envFile: string[];
  publish?: boolean;
  insecureRegistry: string[];
  cacheDir?: string;
  cacheImage?: string;
  clearCache?: boolean;
  previousImage?: string;
  creationTime?: string;
  defaultProcess?: string;
  descriptor?: string;
  tag: string[];
  platform?: string;
  keepTemp?: boolean;
  pullPolicy: string;
  network?: string;
  volume: string[];
  sbomOutputDir?: string;
  reportOutputDir?: string;
  cache?: string;
  gid?: string;
  lifecycleImage?: string;
  trustBuilder?: boolean;
  verbose?: boolean;
  quiet?: boolean;
  json?: boolean;
}

export function registerBuildCommand(program: Command, io: CliIO): void {
  program
    .command('build')
    .description(
      'Build an app into an image with buildpacks (analyze, detect, restore, build, export) for one platform',
    )
    .argument(
      '<image>',
      'registry reference (needs --publish), oci:DIR[:TAG], or a name for the local layout',
    )
    .option('-p, --path <dir>', 'app directory', '.')
    .option('-B, --builder <ref|dir>', 'builder image, builder.toml directory, or /cnb-style directory')
    .option(
      '-b, --buildpack <buildpack>',
      'a buildpack directory, .tgz/.tar archive, or ID@VERSION of a builder buildpack (repeatable; one group in flag order)',
      collect,
      [],
    )
    .option('--run-image <ref>', 'run image to build on (required without a builder)')
    .option(
      '-e, --env <name[=value]>',
      'build-time env var; NAME alone takes it from the environment',
      collect,
      [],
    )
    .option('--env-file <file>', 'file of NAME=VALUE lines (repeatable)', collect, [])
    .option('--publish', 'write IMAGE to its registry (without it a bare reference goes to the local layout)')
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect, [])
    .option('--cache-dir <dir>', 'directory build cache (default: one per image under the data dir)')
    .option('--cache-image <ref>', 'registry (or oci:) build cache image')
    .option('--clear-cache', 'start with an empty build cache')
    .option('--previous-image <ref>', 'image to reuse layers from (default: IMAGE itself)')
    .option('--creation-time <now|unix>', 'image creation time (default SOURCE_DATE_EPOCH or 1980-01-01)')
    .option('-D, --default-process <type>', 'default process type of the image')
    .option('-d, --descriptor <file>', 'project descriptor (default <path>/project.toml)')
    .option('-t, --tag <ref>', 'additional tag (repeatable)', collect, [])
    .option('--platform <os/arch[/variant]>', 'target platform (default: the host)')
    .option(
      '--cache <spec>',
      "pack's cache syntax: 'type=build;format=image;name=REF', 'format=bind;source=DIR' or 'format=volume;name=NAME'",
    )
    .option(
      '--pull-policy <policy>',
      'always (registry), if-not-present (local layout copy first) or never (local layout only), for the builder and run images',
      'always',
    )
    .option('--network <host|none>', "the buildpacks' network (host executor: host only)")
    .option(
      '--volume <host:target[:ro|rw]>',
      'mount a host dir for the buildpacks, read-only unless rw (repeatable; container executors only)',
      collect,
      [],
    )
    .option('--sbom-output-dir <dir>', "copy the buildpacks' SBOM files (<layers>/sbom) to DIR/sbom")
    .option('--report-output-dir <dir>', 'copy report.toml to DIR')
    .option('--gid <n>', 'group id owning the buildpack and app layers in the image (default 1000)')
    .option(
      '--lifecycle-image <ref>',
      'accepted for pack scripts; packfarm is its own lifecycle, so it is not used',
    )
    .option(
      '--trust-builder',
      'accepted for pack scripts; packfarm runs no builder-provided lifecycle to trust',
    )
    .option('--keep-temp', 'build in a fresh temp dir and keep it (workspace, layers) for debugging')
    .option('-v, --verbose', 'show debug logs')
    .option('-q, --quiet', 'show only warnings, errors and the result')
    .option('--json', 'print the build report as JSON on stdout (logs go to stderr)')
    .addHelpText(
      'after',
      [
        '',
        'Buildpacks run on this machine (host executor). Without --publish, a bare',
        'IMAGE is written to the OCI layout <data dir>/images/<registry>/<repository>',
        '(a ":" in the registry becomes "_"; data dir: $PACKFARM_HOME, else',
        '$XDG_DATA_HOME/packfarm, else ~/.local/share/packfarm); podman and skopeo open',
        'the printed location as printed.',
        'Examples:',
        '  packfarm build localhost:5000/app --path ./app --buildpack ./bp \\',
        '    --run-image localhost:5000/run --publish',
        '  packfarm build oci:/tmp/out:app --path ./app --builder ./builder-dir',
      ].join('\n'),
    )
    .action(async (image: string, flags: BuildFlags) => {
      const { buildApp } = await import('../api/build.js');
      const f = await import('../api/build-flags.js');
      const json = flags.json === true;
      const write = (line: string) => (json ? io.err(line) : io.out(line));
      const logger = createLogger({
        level: flags.verbose ? 'debug' : flags.quiet ? 'warn' : 'info',
        write,
      });
      const pullPolicy = f.PullPolicySchema.safeParse(flags.pullPolicy);
      if (!pullPolicy.success)
        throw new PackfarmError(
          'INVALID_ARGS',
          `--pull-policy ${JSON.stringify(flags.pullPolicy)}: not a pull policy`,
          {
            hint: '--pull-policy always, if-not-present or never',
          },
        );
      if (flags.cache && (flags.cacheDir || flags.cacheImage))
        throw new PackfarmError(
          'INVALID_ARGS',
          '--cache cannot be combined with --cache-dir or --cache-image',
        );
      const cache = flags.cache ? f.parseCacheSpec(flags.cache, packfarmDataDir()) : {};
      const gid = flags.gid === undefined ? undefined : Number(flags.gid);
      if (gid !== undefined && !(Number.isInteger(gid) && gid >= 0 && /^\d+$/.test(flags.gid ?? '')))
        throw new PackfarmError('INVALID_ARGS', `--gid ${JSON.stringify(flags.gid)}: not a group id`, {
          hint: 'give a number, e.g. --gid 1000',
        });
      if (flags.lifecycleImage)
        logger.info(
          `note: --lifecycle-image ${flags.lifecycleImage} is not used: packfarm runs its own lifecycle`,
        );
      if (flags.trustBuilder)
        logger.info('note: --trust-builder has no effect: packfarm runs no lifecycle from the builder');
      const report = await buildApp(
        {
          image,
          path: flags.path,
          ...(flags.builder ? { builder: flags.builder } : {}),
          buildpacks: flags.buildpack,
          ...(flags.runImage ? { runImage: flags.runImage } : {}),
          env: flags.env,
          envFiles: flags.envFile,
          publish: flags.publish === true,
          insecureRegistries: flags.insecureRegistry,
          ...(flags.cacheDir ? { cacheDir: flags.cacheDir } : {}),
          ...(flags.cacheImage ? { cacheImage: flags.cacheImage } : {}),
          ...cache,
          pullPolicy: pullPolicy.data,
          ...(flags.network ? { network: f.parseNetwork(flags.network) } : {}),
          volumes: flags.volume.map((v) => f.parseVolume(v)),
          ...(flags.sbomOutputDir ? { sbomOutputDir: flags.sbomOutputDir } : {}),
          ...(flags.reportOutputDir ? { reportOutputDir: flags.reportOutputDir } : {}),
          ...(gid !== undefined ? { gid } : {}),
          clearCache: flags.clearCache === true,
          ...(flags.previousImage ? { previousImage: flags.previousImage } : {}),
          ...(flags.creationTime ? { creationTime: flags.creationTime } : {}),
          ...(flags.defaultProcess ? { defaultProcess: flags.defaultProcess } : {}),
          ...(flags.descriptor ? { descriptor: flags.descriptor } : {}),
          tags: flags.tag,
          ...(flags.platform ? { platform: flags.platform } : {}),
          keepTemp: flags.keepTemp === true,
        },
        {
          logger,
          onEvent: (e) => {
            if (e.type === 'build' && e.event.type === 'buildpack-output' && !flags.quiet)
              write(e.event.line);
          },
        },
      );
      if (json) io.out(JSON.stringify(report, null, 2));
      else printReport(io, report);
    });
}

function printReport(io: CliIO, r: BuildReport): void {
  const added = r.layers.filter((l) => l.outcome === 'added').length;
  const reused = r.layers.length - added;
  io.out(`Successfully built image ${r.image} (${r.platform})`);
  io.out(`  location: ${r.location}`);
  if (r.tags.length > 1) io.out(`  tags:     ${r.tags.join(', ')}`);
  io.out(`  digest:   ${r.digest}`);
  io.out(
    `  layers:   ${added} added, ${reused} reused; run image layers: ${r.baseLayers.exists} present, ${r.baseLayers.mounted} mounted, ${r.baseLayers.uploaded} copied`,
  );
  io.out(
    `  time:     ${(r.timings.total / 1000).toFixed(2)} s (buildpacks ${(r.timings.buildpacks / 1000).toFixed(2)} s)`,
  );
}
