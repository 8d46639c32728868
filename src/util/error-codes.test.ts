import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ERROR_CODES } from './error-codes.js';

describe('ERROR_CODES', () => {
  it('lists each code once', () => {
    expect(ERROR_CODES.filter((c, i) => ERROR_CODES.indexOf(c) !== i)).toEqual([]);
  });

  it('is documented code by code in spec/errors.md', () => {
    const spec = readFileSync(new URL('../../spec/errors.md', import.meta.url), 'utf8');
    // The first cell of each table row names one or more codes.
    const cells = spec
      .split('\n')
      .flatMap((line) => (line.startsWith('| `') ? [line.split('|')[1] ?? ''] : []));
    const documented = new Set(
      cells.flatMap((cell) => [...cell.matchAll(/`([A-Z][A-Z0-9_]+)`/g)].map((m) => m[1])),
    );
    expect(ERROR_CODES.filter((c) => !documented.has(c))).toEqual([]);
    expect([...documented].filter((c) => !(ERROR_CODES as readonly string[]).includes(c!))).toEqual([]);
  });
});
