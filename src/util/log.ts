/** A small levelled logger: human lines by default, JSON lines for machines. Honours NO_COLOR. */
export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
const ORDER: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };

export interface Logger {
  debug(msg: string, fields?: Record<string, unknown>): void;
  info(msg: string, fields?: Record<string, unknown>): void;
  warn(msg: string, fields?: Record<string, unknown>): void;
  error(msg: string, fields?: Record<string, unknown>): void;
  child(prefix: string): Logger;
}

export interface LoggerOptions {
  level?: LogLevel;
  json?: boolean;
  write?: (line: string) => void;
  prefix?: string;
  /** Force colour off (`false`) or on (`true`); default: on for a TTY stderr unless NO_COLOR is set. */
  color?: boolean;
}

export function createLogger(opts: LoggerOptions = {}): Logger {
  const level = opts.level ?? 'info';
  const write = opts.write ?? ((line: string) => process.stderr.write(`${line}\n`));
  const color = !opts.json && (opts.color ?? (!process.env.NO_COLOR && process.stderr.isTTY === true));
  const emit = (lvl: LogLevel, msg: string, fields?: Record<string, unknown>) => {
    if (ORDER[lvl] < ORDER[level]) return;
    if (opts.json) {
      write(JSON.stringify({ level: lvl, ...(opts.prefix ? { scope: opts.prefix } : {}), msg, ...fields }));
      return;
    }
    const tag = lvl === 'info' ? '' : `${paint(color, lvl)} `;
    const pre = opts.prefix ? `[${opts.prefix}] ` : '';
    write(`${pre}${tag}${msg}`);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (prefix) => createLogger({ ...opts, prefix: opts.prefix ? `${opts.prefix}/${prefix}` : prefix }),
  };
}

export const silentLogger: Logger = {
  debug() {},
  info() {},
  warn() {},
  error() {},
  child: () => silentLogger,
};

function paint(color: boolean, lvl: LogLevel): string {
  const label = lvl.toUpperCase();
  if (!color) return `${label}:`;
  const code = lvl === 'error' ? 31 : lvl === 'warn' ? 33 : 90;
  return `\u001b[${code}m${label}:\u001b[0m`;
}
