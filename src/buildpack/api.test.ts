import { describe, expect, it } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import { checkBuildpackApi } from './api.js';

describe('Buildpack API', () => {
  it('rejects unsupported buildpack APIs with the kind the phases map to exit 12, naming the buildpack', () => {
    expect(checkBuildpackApi('0.12', 'bp')).toEqual({ major: 0, minor: 12 });
    for (const bad of ['0.4', 'zero', undefined]) {
      try {
        checkBuildpackApi(bad, 'buildpack a/b@1.0.0');
        expect.unreachable();
      } catch (err) {
        expect(isPackfarmError(err, 'INCOMPATIBLE_BUILDPACK_API')).toBe(true);
        expect((err as Error).message).toContain('buildpack a/b@1.0.0');
        expect((err as { kind: string }).kind).toBe('incompatible-buildpack-api');
      }
    }
  });
});
