import type { Command } from 'commander';
import type { BuildOptions, BuildReport } from '../api/build.js';
import { PackfarmError } from '../util/errors.js';
import { packfarmDataDir } from '../image/data-dir.js';
import { type CliIO, collect, INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP } from './output.js';
import { colorAllowed, createBuildRenderer, formatBytes } from './render.js';

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
  platform: string[];
  executor?: string;
  buildImage?: string;
  jobs?: string;
  format?: string;
  events?: boolean;
  pullPolicy: string;
  network?: string;
  volume: string[];
  sbomOutputDir?: string;
  reportOutputDir?: string;
  cache?: string;
  gid?: string;
  lifecycleImage?: string;
  trustBuilder?: boolean;
  keepTemp?: boolean;
  farm?: string;
  verbose?: boolean;
  quiet?: boolean;
  json?: boolean;
}

export function registerBuildCommand(program: Command, io: CliIO): void {
  const cmd = program
    .command('build')
    .description(
      'Build an app into an image with buildpacks (analyze, detect, restore, build, export), for one platform or several (one image index)',
    )
    .argument(
      '<image>',
      'registry reference (needs --publish), oci:DIR[:TAG], or a name for the local layout',
    );
  withBuildOptions(cmd).action(async (image: string, flags: BuildFlags) => {
    const { build } = await import('../api/build.js');
    const json = flags.json === true;
    const write = (line: string) => (json ? io.err(line) : io.out(line));
    const options = await buildOptions(image, flags, write);
    const tty = !json && !flags.events && io.isTTY === true;
    const renderer = createBuildRenderer({
      mode: flags.events ? 'json' : tty ? 'tty' : 'lines',
      write,
      ...(io.rawText ? { writeRaw: io.rawText } : {}),
      verbose: flags.verbose === true,
      quiet: flags.quiet === true,
      color: colorAllowed(tty),
    });
    let report: BuildReport;
    // A farm build cancels its remote jobs on Ctrl-C / SIGTERM: closing each node connection does that.
    const ac = new AbortController();
    const onSignal = () => ac.abort();
    if (flags.farm) {
      for (const s of ['SIGINT', 'SIGTERM'] as const) process.once(s, onSignal);
      io.signal?.addEventListener('abort', onSignal, { once: true });
    }
    const farmName = flags.farm;
    const run = farmName
      ? async (o: Parameters<typeof build>[0], h: Parameters<typeof build>[1]) => {
          const { buildOnFarm } = await import('../farm/build.js');
          return buildOnFarm(o, { ...h, farm: farmName, signal: ac.signal });
        }
      : build;
    try {
      report = await run(options, {
        onEvent: (e) => renderer.onEvent(e),
        ...(io.signal ? { signal: io.signal } : {}),
      });
    } finally {
      for (const s of ['SIGINT', 'SIGTERM'] as const) process.off(s, onSignal);
      renderer.close();
    }
    if (json) io.out(JSON.stringify(report, null, 2));
    else printReport(io, report);
  });
}

/** The build command's flags, help and examples (pack's names where pack has the flag). */
function withBuildOptions(cmd: Command): Command {
  return cmd
    .option('-p, --path <dir>', 'app directory', '.')
    .option(
      '-B, --builder <ref|dir>',
      'builder image, builder.toml directory, or /cnb-style directory (default, when nothing names buildpacks: builders/default, made on first use)',
    )
    .option(
      '-b, --buildpack <buildpack>',
      'a buildpack directory, .tgz/.tar archive, buildpackage (docker://REF, oci:DIR[:TAG], FILE.cnb; read per target platform), or ID@VERSION of a builder buildpack (repeatable; one group in flag order)',
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
    .option(
      '--cache-dir <dir>',
      'directory build cache (default: one per image under the data dir); with --farm, nodes build with it and their new cache is committed back here',
    )
    .option('--cache-image <ref>', 'registry (or oci:) build cache image')
    .option('--clear-cache', 'start with an empty build cache')
    .option('--previous-image <ref>', 'image to reuse layers from (default: IMAGE itself)')
    .option('--creation-time <now|unix>', 'image creation time (default SOURCE_DATE_EPOCH or 1980-01-01)')
    .option('-D, --default-process <type>', 'default process type of the image')
    .option('-d, --descriptor <file>', 'project descriptor (default <path>/project.toml)')
    .option('-t, --tag <ref>', 'additional tag (repeatable)', collect, [])
    .option(
      '--platform <os/arch[/variant],...>',
      "target platforms, comma-separated, repeatable (default: the builder's platforms this machine can run, else the host's; with the default builder, those it runs natively)",
      collect,
      [],
    )
    .option(
      '--executor <host|oci>',
      'run buildpacks in the build image (oci, default with one) or on this machine (host)',
    )
    .option('--build-image <ref>', 'image (or index) buildpacks run in, for a build without a builder image')
    .option('--jobs <n>', 'targets built at the same time (default: the number of CPUs)')
    .option(
      '--format <oci|docker>',
      'index format with several targets: OCI image index or Docker manifest list',
      'oci',
    )
    .option(
      '--farm <name>',
      'build each target on a node of this farm (see `packfarm farm --help`); without it, on this machine. Builders, build and run images, builder dirs and --cache-dir that only this machine has are sent to the nodes by digest',
    )
    .option(
      '--cache <spec>',
      "pack's cache syntax: 'type=build;format=image;name=REF', 'format=bind;source=DIR' or 'format=volume;name=NAME'",
    )
    .option(
      '--pull-policy <policy>',
      'always (registry), if-not-present (local layout copy first) or never (local layout only), for the builder and run images',
      'always',
    )
    .option(
      '--network <host|none>',
      "the buildpacks' network (oci executor: host or none; host executor: host only)",
    )
    .option(
      '--volume <host:target[:ro|rw]>',
      'mount a host path at TARGET in the build container, read-only unless rw (repeatable; oci executor only)',
      collect,
      [],
    )
    .option(
      '--sbom-output-dir <dir>',
      "copy the buildpacks' SBOM files (<layers>/sbom) to DIR/sbom (per target: DIR/<os-arch>/sbom)",
    )
    .option('--report-output-dir <dir>', 'copy report.toml to DIR (per target: DIR/<os-arch>)')
    .option('--gid <n>', 'group id owning the buildpack and app layers in the image (default: the CNB group)')
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
    .option('--events', 'print every build event as a JSON line (on stderr with --json)')
    .addHelpText(
      'after',
      [
        '',
        'Several --platform targets build at the same time (--jobs) and publish one',
        'image index: each target image is written by digest, and the index (children',
        'sorted by platform) is tagged last, only when every target succeeded. One',
        'target gives a plain image. With a builder image (or --build-image) buildpacks',
        "run inside that target's build image (oci executor; foreign architectures",
        'through qemu binfmt_misc); without one they run on this machine (host',
        'executor), which can build only its own platform. When nothing names a',
        'builder or buildpacks, the default builder (builders/default: Node.js,',
        'shell script and Procfile buildpacks on Debian 12) is made on first use.',
        'Without --publish, a bare IMAGE is written to the OCI layout',
        '<data dir>/images/<registry>/<repository> (a ":" in the registry becomes "_";',
        'data dir: $PACKFARM_HOME, else $XDG_DATA_HOME/packfarm, else',
        '~/.local/share/packfarm); podman and skopeo open the printed location as',
        'printed. On a terminal each target has a status line; otherwise lines are',
        'prefixed with the target ([linux/arm64] ===> BUILD). NO_COLOR turns colour off.',
        'A rebuild keeps the layer dirs that did not change since the last build of the',
        'same image and platform (stat data); PACKFARM_TRUST_STAT=0 extracts and hashes',
        'every layer instead.',
        'Examples:',
        '  packfarm build localhost:5000/app --path ./app --buildpack ./bp \\',
        '    --run-image localhost:5000/run --publish',
        '  packfarm build localhost:5000/app --builder localhost:5000/builder \\',
        '    --platform linux/amd64,linux/arm64 --publish',
        '  packfarm build oci:/tmp/out:app --path ./app --builder ./builder-dir',
      ].join('\n'),
    );
}

/** The flags as build() options, checked; notes about flags packfarm accepts but does not need go to `note`. */
async function buildOptions(
  image: string,
  flags: BuildFlags,
  note: (line: string) => void,
): Promise<BuildOptions> {
  const jobs = flags.jobs === undefined ? undefined : Number(flags.jobs);
  if (jobs !== undefined && (!Number.isInteger(jobs) || jobs < 1))
    throw new PackfarmError('INVALID_ARGS', `--jobs ${flags.jobs}: expected a whole number of 1 or more`);
  if (flags.executor !== undefined && flags.executor !== 'host' && flags.executor !== 'oci')
    throw new PackfarmError('INVALID_ARGS', `--executor ${flags.executor}: expected host or oci`);
  if (flags.format !== undefined && flags.format !== 'oci' && flags.format !== 'docker')
    throw new PackfarmError('INVALID_ARGS', `--format ${flags.format}: expected oci or docker`);
  const f = await import('../api/build-flags.js');
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
    throw new PackfarmError('INVALID_ARGS', '--cache cannot be combined with --cache-dir or --cache-image');
  const cache = flags.cache ? f.parseCacheSpec(flags.cache, packfarmDataDir()) : {};
  const gid = flags.gid === undefined ? undefined : Number(flags.gid);
  if (gid !== undefined && !(Number.isInteger(gid) && gid >= 0 && /^\d+$/.test(flags.gid ?? '')))
    throw new PackfarmError('INVALID_ARGS', `--gid ${JSON.stringify(flags.gid)}: not a group id`, {
      hint: 'give a number, e.g. --gid 1000',
    });
  if (flags.lifecycleImage)
    note(`note: --lifecycle-image ${flags.lifecycleImage} is not used: packfarm runs its own lifecycle`);
  if (flags.trustBuilder)
    note('note: --trust-builder has no effect: packfarm runs no lifecycle from the builder');
  return {
    image,
    path: flags.path,
    ...(flags.builder ? { builder: flags.builder } : {}),
    buildpacks: flags.buildpack,
    ...(flags.runImage ? { runImage: flags.runImage } : {}),
    ...(flags.buildImage ? { buildImage: flags.buildImage } : {}),
    env: flags.env,
    envFiles: flags.envFile,
    publish: flags.publish === true,
    insecureRegistries: flags.insecureRegistry,
    ...(flags.cacheDir ? { cacheDir: flags.cacheDir } : {}),
    ...(flags.cacheImage ? { cacheImage: flags.cacheImage } : {}),
    clearCache: flags.clearCache === true,
    ...(flags.previousImage ? { previousImage: flags.previousImage } : {}),
    ...(flags.creationTime ? { creationTime: flags.creationTime } : {}),
    ...(flags.defaultProcess ? { defaultProcess: flags.defaultProcess } : {}),
    ...(flags.descriptor ? { descriptor: flags.descriptor } : {}),
    tags: flags.tag,
    platforms: flags.platform,
    ...(flags.executor ? { executor: flags.executor as 'host' | 'oci' } : {}),
    ...(jobs !== undefined ? { jobs } : {}),
    ...(flags.format ? { format: flags.format as 'oci' | 'docker' } : {}),
    ...cache,
    pullPolicy: pullPolicy.data,
    ...(flags.network ? { network: f.parseNetwork(flags.network) } : {}),
    volumes: flags.volume.map((v) => f.parseVolume(v)),
    ...(flags.sbomOutputDir ? { sbomOutputDir: flags.sbomOutputDir } : {}),
    ...(flags.reportOutputDir ? { reportOutputDir: flags.reportOutputDir } : {}),
    ...(gid !== undefined ? { gid } : {}),
    keepTemp: flags.keepTemp === true,
  };
}

function printReport(io: CliIO, r: BuildReport): void {
  io.out(
    `Successfully built ${r.index ? 'image index' : 'image'} ${r.image}${r.index ? '' : ` (${r.targets[0]?.platform})`}`,
  );
  io.out(`  location: ${r.location}`);
  if (r.tags.length > 1) io.out(`  tags:     ${r.tags.join(', ')}`);
  io.out(`  digest:   ${r.digest}`);
  io.out(`  uploaded: ${formatBytes(r.bytesUploaded)}`);
  for (const t of r.targets) {
    const pre = r.index ? `  ${t.platform}: ` : '  ';
    if (r.index)
      io.out(
        `${pre}${t.digest} (${t.runs}, ${t.executor} executor, ${formatBytes(t.size)}, ${formatBytes(t.bytesUploaded)} uploaded)`,
      );
    const ind0 = r.index ? '    ' : '  ';
    if (t.farm)
      io.out(
        `${ind0}node:     ${t.farm.node} (${t.runs}); sent ${formatBytes(t.farm.bytesSent)}, received ${formatBytes(t.farm.bytesReceived)}` +
          (t.farm.attempts.length > 0
            ? `; retried after ${t.farm.attempts.map((a) => `${a.node} failed (${a.message})`).join(', ')}`
            : ''),
      );
    const ind = r.index ? '    ' : '  ';
    io.out(
      `${ind}layers:   ${t.layerCounts.added} added, ${t.layerCounts.reused} reused, ${t.layerCounts.existing} already there, ${t.layerCounts.mounted} mounted; run image layers: ${t.baseLayers.exists} present, ${t.baseLayers.mounted} mounted, ${t.baseLayers.uploaded} copied`,
    );
    if (t.restored.length > 0) {
      const n = (o: string) => t.restored.filter((l) => l.outcome === o).length;
      io.out(
        `${ind}restored: ${n('kept')} kept (unchanged since the last build), ${n('content')} from the cache, ${n('metadata')} metadata only`,
      );
    }
    io.out(
      `${ind}time:     ${t.timings.total.toFixed(2)} s (buildpacks ${t.timings.buildpacks.toFixed(2)} s)`,
    );
  }
  if (r.index) io.out(`  time:     ${r.timings.total.toFixed(2)} s in all`);
}
