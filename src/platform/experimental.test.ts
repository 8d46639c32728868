import { describe, expect, it } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import { createLogger } from '../util/log.js';
import { ExperimentalFeature, experimentalMode, guardExperimental } from './experimental.js';

function capture() {
  const lines: string[] = [];
  return { lines, logger: createLogger({ level: 'debug', write: (l) => lines.push(l), color: false }) };
}

describe('CNB_EXPERIMENTAL_MODE', () => {
  it('defaults to error; quiet, warn, error as given; silent means quiet; anything else is "other"', () => {
    expect(experimentalMode({})).toBe('error');
    expect(experimentalMode({ CNB_EXPERIMENTAL_MODE: '' })).toBe('error');
    expect(experimentalMode({ CNB_EXPERIMENTAL_MODE: 'warn' })).toBe('warn');
    expect(experimentalMode({ CNB_EXPERIMENTAL_MODE: 'quiet' })).toBe('quiet');
    expect(experimentalMode({ CNB_EXPERIMENTAL_MODE: 'silent' })).toBe('quiet');
    expect(experimentalMode({ CNB_EXPERIMENTAL_MODE: 'loud' })).toBe('other');
  });

  it('error refuses with exit 1 after naming the feature; warn and unknown values warn; quiet says nothing', () => {
    const e = capture();
    let err: unknown;
    try {
      guardExperimental(ExperimentalFeature.layout, {}, e.logger);
    } catch (x) {
      err = x;
    }
    expect(isPackfarmError(err, 'EXPERIMENTAL_DISABLED')).toBe(true);
    expect((err as { exitCode: number }).exitCode).toBe(1);
    expect((err as Error).message).toBe('experimental features are disabled by CNB_EXPERIMENTAL_MODE=error');
    expect(e.lines.join('\n')).toContain(
      "Platform requested experimental feature 'export to OCI layout format'",
    );

    for (const mode of ['warn', 'loud']) {
      const w = capture();
      guardExperimental(ExperimentalFeature.layout, { CNB_EXPERIMENTAL_MODE: mode }, w.logger);
      expect(w.lines).toEqual([
        "WARN: Platform requested experimental feature 'export to OCI layout format'",
      ]);
    }
    const q = capture();
    guardExperimental(ExperimentalFeature.layout, { CNB_EXPERIMENTAL_MODE: 'quiet' }, q.logger);
    expect(q.lines).toEqual([]);
  });
});
