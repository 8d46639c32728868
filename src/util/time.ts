import { PackfarmError } from './errors.js';

/** The fixed timestamp reproducible builds use when nothing else is asked for (as pack/lifecycle do). */
export const REPRODUCIBLE_EPOCH = new Date('1980-01-01T00:00:01Z');

/**
 * Resolve a creation time: `now`, or seconds since the Unix epoch; when `value` is undefined,
 * SOURCE_DATE_EPOCH from `env`, else the reproducible default. `source` names the flag for errors.
 */
export function resolveCreationTime(
  value: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
  source = '--creation-time',
): Date {
  if (value === undefined) {
    const epoch = env.SOURCE_DATE_EPOCH;
    if (epoch === undefined || epoch === '') return REPRODUCIBLE_EPOCH;
    return parseUnixSeconds(epoch, 'SOURCE_DATE_EPOCH');
  }
  if (value === 'now') return new Date(Math.floor(Date.now() / 1000) * 1000);
  return parseUnixSeconds(value, source);
}

function parseUnixSeconds(text: string, source: string): Date {
  if (!/^\d{1,12}$/.test(text)) {
    throw new PackfarmError('INVALID_CREATION_TIME', `${source}: "${text}" is not a time`, {
      hint: 'expected "now" or a number of seconds since 1970-01-01T00:00:00Z, e.g. 1700000000',
    });
  }
  return new Date(Number(text) * 1000);
}
