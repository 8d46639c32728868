import { readFileSync } from 'node:fs';
import { checkPlatformApi } from '../../platform/api.js';
import { type ApiVersion, formatApiVersion } from '../../util/api-version.js';
import { EXIT } from '../../platform/exit-codes.js';
import {
  formatInputsHelp,
  type InputDef,
  parseLifecycleArgs,
  parseLogLevel,
  type ResolvedInputs,
  resolveInputs,
} from '../../platform/inputs.js';
import { PackfarmError } from '../../util/errors.js';
import { createLogger, type Logger, type LogLevel } from '../../util/log.js';
import { type CliIO, wrapLine, wrapSentences } from '../output.js';

/** What every phase command starts from once its inputs are resolved. */
export interface PhaseContext {
  platformApi: ApiVersion;
  inputs: ResolvedInputs;
  logger: Logger;
  logLevel: LogLevel;
  positionals: string[];
}

export interface PreparePhaseOptions {
  name: string;
  args: string[];
  io: CliIO;
  env: NodeJS.ProcessEnv;
  /** The inputs the phase accepts under the requested Platform API (flags differ between versions). */
  inputs: (platformApi: ApiVersion) => InputDef[];
  /** How many positional arguments the phase takes (default none). */
  positionals?: { min: number; max: number; usage: string };
}

/**
 * The common start of a phase: check CNB_PLATFORM_API before anything else (exit 11), parse the flags, apply
 * env fallbacks and defaults, and set up logging. Returns an exit code instead when `-version` was asked for.
 */
export function preparePhase(opts: PreparePhaseOptions): PhaseContext | number {
  const platformApi = checkPlatformApi(opts.env.CNB_PLATFORM_API);
  const defs = opts.inputs(platformApi);
  const parsed = parseLifecycleArgs(opts.args, defs);
  if (parsed.version) {
    opts.io.out(packageVersion());
    return EXIT.OK;
  }
  const want = opts.positionals ?? { min: 0, max: 0, usage: '' };
  if (parsed.positionals.length < want.min || parsed.positionals.length > want.max) {
    const msg =
      want.max === 0
        ? `${opts.name} takes no arguments, got: ${parsed.positionals.join(' ')}`
        : `${opts.name} expects ${want.usage}, got ${parsed.positionals.length} argument(s)`;
    throw new PackfarmError('INVALID_ARGS', msg, {
      exitCode: EXIT.INVALID_ARGS,
      hint: 'flags come before arguments and take one dash: -flag value',
    });
  }
  const inputs = resolveInputs(defs, parsed, { env: opts.env });
  const logLevel = defs.some((d) => d.name === 'log-level')
    ? parseLogLevel(inputs.require('log-level'))
    : 'info';
  const noColor = defs.some((d) => d.name === 'no-color') && inputs.bool('no-color');
  const logger = phaseLogger(opts.io, logLevel, noColor);
  logger.debug(`Starting ${opts.name} (Platform API ${formatApiVersion(platformApi)})...`);
  return { platformApi, inputs, logger, logLevel, positionals: parsed.positionals };
}

/**
 * The version printed for `-version`, read from package.json (src/cli/lifecycle and dist/cli/lifecycle are
 * both three levels below it). Not imported from cli/main.ts: that would close an import cycle through the
 * dispatcher.
 */
function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Info and debug lines to stdout, warnings and errors to stderr. */
export function phaseLogger(io: CliIO, level: LogLevel, noColor = false): Logger {
  const color = noColor ? { color: false } : {};
  const out = createLogger({ level, write: (l) => io.out(l), ...color });
  const err = createLogger({ level, write: (l) => io.err(l), ...color });
  return { debug: out.debug, info: out.info, warn: err.warn, error: err.error, child: out.child };
}

/** Usage text of a phase from its inputs. */
export function phaseUsage(
  name: string,
  summary: string,
  defs: readonly InputDef[],
  notes: string[] = [],
): string {
  const inputs = formatInputsHelp(defs)
    .split('\n')
    .flatMap((l) => wrapLine(l, 6));
  return [
    `Usage: packfarm lifecycle ${name} [flags]`,
    '',
    ...wrapLine(summary, 0),
    '',
    'Inputs (flag, environment variable, meaning):',
    ...inputs,
    '',
    'CNB_PLATFORM_API must be set (supported: 0.12, 0.13, 0.14, 0.15).',
    ...wrapSentences(notes),
  ].join('\n');
}
