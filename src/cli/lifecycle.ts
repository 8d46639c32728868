import { EXIT } from '../platform/exit-codes.js';
import { analyzerCommand } from './lifecycle/analyzer.js';
import { builderCommand } from './lifecycle/builder.js';
import { creatorCommand } from './lifecycle/creator.js';
import { detectorCommand } from './lifecycle/detector.js';
import { exporterCommand } from './lifecycle/exporter.js';
import { rebaserCommand } from './lifecycle/rebaser.js';
import { restorerCommand } from './lifecycle/restorer.js';
import type { PhaseCommand } from './lifecycle/types.js';
import { type CliIO, reportError, wrapLine } from './output.js';

/** The lifecycle phases packfarm can run as separate commands, in the order a platform runs them. */
export const LIFECYCLE_PHASES: readonly PhaseCommand[] = [
  analyzerCommand,
  detectorCommand,
  restorerCommand,
  builderCommand,
  exporterCommand,
  rebaserCommand,
  creatorCommand,
];

const HELP_ARGS = new Set(['-h', '-help', '--help', 'help']);

export function lifecycleUsage(): string {
  const width = Math.max(...LIFECYCLE_PHASES.map((p) => p.name.length));
  return [
    'Usage: packfarm lifecycle <phase> [-flag value ...]',
    '',
    'Runs one phase of the Cloud Native Buildpacks lifecycle the way a platform calls',
    '/cnb/lifecycle/<phase>: single-dash flags, CNB_* environment variables as',
    'fallbacks, CNB exit codes. CNB_PLATFORM_API must be set.',
    '',
    'Phases:',
    ...LIFECYCLE_PHASES.flatMap((p) => wrapLine(`  ${p.name.padEnd(width)}  ${p.summary}`, width + 4)),
    '',
    'Run `packfarm lifecycle <phase> --help` for the flags of a phase.',
  ].join('\n');
}

/**
 * `packfarm lifecycle <phase> ...`: pick the phase, print help when asked, run it and turn errors into the
 * phase's exit code. `env` is where the phase reads CNB_* inputs (the process env unless a test passes one).
 */
export async function runLifecycleCommand(
  argv: string[],
  io: CliIO,
  env: NodeJS.ProcessEnv = process.env,
): Promise<number> {
  const [name, ...args] = argv;
  if (name === undefined) {
    io.err(lifecycleUsage());
    return EXIT.INVALID_ARGS;
  }
  if (HELP_ARGS.has(name)) {
    io.out(lifecycleUsage());
    return EXIT.OK;
  }
  const phase = LIFECYCLE_PHASES.find((p) => p.name === name);
  if (!phase) {
    io.err(
      `error: unknown lifecycle phase "${name}" (phases: ${LIFECYCLE_PHASES.map((p) => p.name).join(', ')})`,
    );
    return EXIT.INVALID_ARGS;
  }
  for (const a of args) {
    if (a === '--') break;
    if (HELP_ARGS.has(a) && a !== 'help') {
      io.out(phase.usage);
      return EXIT.OK;
    }
  }
  try {
    return await phase.run(args, io, env);
  } catch (err) {
    return reportError(io, err, false);
  }
}
