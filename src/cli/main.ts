import { Command, CommanderError } from 'commander';
import { registerBuildCommand } from './build.js';
import { type CliIO, processIO, reportError } from './output.js';
import { registerImageCommands } from './image.js';
import { registerInspectCommands } from './inspect.js';
import { registerLayerCommands } from './layer.js';
import { registerManifestCommands } from './manifest.js';
import { registerNodeCommands } from './node.js';
import { registerSbomCommands } from './sbom.js';
import { registerRebaseCommand } from './rebase.js';

export const VERSION = '0.1.0';

/** Build the command tree. Each group lives in its own file and only parses and prints. */
export function createProgram(io: CliIO): Command {
  const program = new Command('packfarm')
    .description(
      'Build apps into multi-arch OCI images with Cloud Native Buildpacks, on a farm of build nodes',
    )
    .version(VERSION)
    .showHelpAfterError()
    .configureOutput({ writeOut: (s) => io.out(s), writeErr: (s) => io.err(s) })
    .exitOverride();
  program.addHelpText(
    'after',
    '\nLifecycle phases (CNB platform API, single-dash flags as the lifecycle takes them):\n' +
      '  packfarm lifecycle <analyzer|detector|restorer|builder|exporter|…> [-flag value ...]\n' +
      '  see `packfarm lifecycle --help` for every phase',
  );
  registerBuildCommand(program, io);
  registerImageCommands(program, io);
  registerManifestCommands(program, io);
  registerLayerCommands(program, io);
  registerInspectCommands(program, io);
  registerSbomCommands(program, io);
  registerRebaseCommand(program, io);
  registerNodeCommands(program, io);
  return program;
}

/** Run the CLI; returns the process exit code. */
export async function main(argv: string[], io: CliIO = processIO): Promise<number> {
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
    return reportError(io, err, json);
  }
}
