import { Command, CommanderError } from 'commander';
import { registerBaseCommands } from './base.js';
import { registerBuildCommand } from './build.js';
import { registerBuilderCommands } from './builder.js';
import { registerBuildpackCommands } from './buildpack.js';
import { type CliIO, processIO, reportError } from './output.js';
import { registerImageCommands } from './image.js';
import { registerInspectCommands } from './inspect.js';
import { registerLayerCommands } from './layer.js';
import { registerLoginCommands } from './login.js';
import { registerManifestCommands } from './manifest.js';
import { registerNodeCommands } from './node.js';
import { registerSbomCommands } from './sbom.js';
import { registerRebaseCommand } from './rebase.js';
import { registerSystemCommands } from './system.js';
import { PackfarmError } from '../util/errors.js';

export const VERSION = '0.1.0';

/** Build the command tree. Each group lives in its own file and only parses and prints. */
export function createProgram(io: CliIO): Command {
  const program = new Command('packfarm')
    .description(
      'Build apps into multi-arch OCI images with Cloud Native Buildpacks, on a farm of build nodes',
    )
    .version(VERSION)
    .showHelpAfterError()
    // Command lists show name and arguments only (each command's own --help has its options), so the
    // descriptions beside them have room to wrap at the terminal's width like everything else.
    .configureHelp({
      subcommandTerm: (cmd) =>
        [
          cmd.name(),
          ...cmd.registeredArguments.map((a) => (a.required ? `<${a.name()}>` : `[${a.name()}]`)),
        ].join(' '),
    })
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .exitOverride();
  program.addHelpText(
    'after',
    "\nLifecycle phases (CNB platform API, the lifecycle's single-dash flags):\n" +
      '  packfarm lifecycle <analyzer|detector|restorer|builder|exporter|…> [-flag v]\n' +
      '  see `packfarm lifecycle --help` for every phase',
  );
  registerBuildCommand(program, io);
  registerImageCommands(program, io);
  registerManifestCommands(program, io);
  registerLayerCommands(program, io);
  registerInspectCommands(program, io);
  registerSbomCommands(program, io);
  registerRebaseCommand(program, io);
  registerLoginCommands(program, io);
  registerSystemCommands(program, io, VERSION);
  registerNodeCommands(program, io);
  registerBaseCommands(program, io);
  registerBuilderCommands(program, io);
  registerBuildpackCommands(program, io);
  return program;
}

/** Run the CLI; returns the process exit code. */
export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
  try {
    return await dispatch(argv, io);
  } catch (err) {
    // What an interrupted command throws is a consequence of the interruption, which the caller reports.
    if (io.signal?.aborted) return 1;
    throw err;
  }
}

const INTERRUPTS = { SIGINT: 130, SIGTERM: 143 } as const;

/**
 * `bin/packfarm.js`: run the CLI for this process. SIGINT or SIGTERM (Ctrl-C, a CI cancel, systemd stop)
 * aborts `io.signal`: the running command stops its buildpack processes (their whole process groups) and
 * removes its temp dirs, then packfarm says it was interrupted and exits 130 or 143. A second signal exits
 * at once; buildpack process groups still running are killed on the way out (exec/host.ts).
 */
export async function runCli(argv: string[]): Promise<number> {
  const controller = new AbortController();
  let interrupted: keyof typeof INTERRUPTS | undefined;
  const onSignal = (name: keyof typeof INTERRUPTS) => {
    if (interrupted) process.exit(INTERRUPTS[interrupted]);
    interrupted = name;
    processIO.err(`packfarm: interrupted (${name}): stopping`);
    controller.abort(new PackfarmError('ABORTED', `interrupted by ${name}`));
  };
  const handlers = (Object.keys(INTERRUPTS) as Array<keyof typeof INTERRUPTS>).map((name) => {
    const h = () => onSignal(name);
    process.on(name, h);
    return [name, h] as const;
  });
  try {
    const code = await main(argv, { ...processIO, signal: controller.signal });
    if (!interrupted) return code;
    processIO.err(`packfarm: interrupted by ${interrupted}`);
    return INTERRUPTS[interrupted];
  } finally {
    for (const [name, h] of handlers) process.off(name, h);
  }
}

async function dispatch(argv: string[], io: CliIO): Promise<number> {
  // The lifecycle phase commands take the lifecycle's single-dash flags (-app, -layers …), which commander
  // cannot parse, so they have their own small parser.
  // Loaded only when asked for: the phases pull in most of packfarm, which other commands need not load.
  if (argv[0] === 'lifecycle') {
    const { runLifecycleCommand } = await import('./lifecycle.js');
    return runLifecycleCommand(argv.slice(1), io);
  }
  const program = createProgram(io);
  const json = argv.includes('--json');
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) return err.exitCode;
    if (io.signal?.aborted) return 1;
    return reportError(io, err, json);
  }
}
