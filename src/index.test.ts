import { describe, expect, it } from 'vitest';
import * as api from './index.js';

describe('public API', () => {
  it('exports exactly the surface recorded in the snapshot (a change to it is a deliberate API change)', () => {
    // Every runtime export with its kind; types are checked by tsc against the same index.ts.
    const surface = Object.entries(api)
      .map(([name, value]) => `${name}: ${typeof value}`)
      .sort();
    expect(surface).toMatchSnapshot();
  });

  it('reports user errors as PackfarmError with a stable code', () => {
    try {
      api.parseReference('Not Valid');
      expect.unreachable();
    } catch (err) {
      expect(api.isPackfarmError(err, 'INVALID_REFERENCE')).toBe(true);
    }
  });
});
