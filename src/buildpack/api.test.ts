import { describe, expect, it } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import {
  apiAtLeast,
  checkBuildpackApi,
  checkPlatformApi,
  compareApiVersions,
  isApiSupported,
  parseApiVersion,
  SUPPORTED_BUILDPACK_APIS,
  tryParseApiVersion,
} from './api.js';

describe('API versions', () => {
  it('parses major.minor and a bare major', () => {
    expect(parseApiVersion('0.12')).toEqual({ major: 0, minor: 12 });
    expect(parseApiVersion('1')).toEqual({ major: 1, minor: 0 });
    expect(parseApiVersion('v0.9')).toEqual({ major: 0, minor: 9 });
    expect(tryParseApiVersion('0.12.1')).toBeUndefined();
    expect(tryParseApiVersion('latest')).toBeUndefined();
    expect(() => parseApiVersion('x', 'buildpack.toml api')).toThrow(
      /buildpack.toml api: "x" is not an API version/,
    );
  });

  it('compares numerically, not as strings', () => {
    expect(compareApiVersions('0.10', '0.9')).toBe(1);
    expect(compareApiVersions('0.9', '0.10')).toBe(-1);
    expect(compareApiVersions('1', '1.0')).toBe(0);
    expect(apiAtLeast('0.12', '0.10')).toBe(true);
    expect(apiAtLeast('0.9', '0.10')).toBe(false);
  });

  it('before 1.0 supports only listed minors; from 1.0 a listed minor covers older ones', () => {
    expect(isApiSupported('0.9', SUPPORTED_BUILDPACK_APIS)).toBe(true);
    expect(isApiSupported('0.8', SUPPORTED_BUILDPACK_APIS)).toBe(false);
    expect(isApiSupported('0.13', SUPPORTED_BUILDPACK_APIS)).toBe(false);
    expect(isApiSupported('1.2', ['1.3'])).toBe(true);
    expect(isApiSupported('1.4', ['1.3'])).toBe(false);
    expect(isApiSupported('2.0', ['1.3'])).toBe(false);
  });

  it('rejects unsupported buildpack APIs with exit 12, naming the buildpack', () => {
    expect(checkBuildpackApi('0.12', 'bp')).toEqual({ major: 0, minor: 12 });
    for (const bad of ['0.4', 'zero', undefined]) {
      try {
        checkBuildpackApi(bad, 'buildpack a/b@1.0.0');
        expect.unreachable();
      } catch (err) {
        expect(isPackfarmError(err, 'INCOMPATIBLE_BUILDPACK_API')).toBe(true);
        expect((err as Error).message).toContain('buildpack a/b@1.0.0');
        expect((err as { exitCode: number }).exitCode).toBe(12);
      }
    }
  });

  it('rejects unset or unsupported platform APIs with exit 11', () => {
    expect(checkPlatformApi('0.15')).toEqual({ major: 0, minor: 15 });
    for (const bad of [undefined, '', '0.11', '0.16', 'abc']) {
      try {
        checkPlatformApi(bad);
        expect.unreachable();
      } catch (err) {
        expect((err as { exitCode: number }).exitCode).toBe(11);
        expect((err as { hint: string }).hint).toContain('0.12, 0.13, 0.14, 0.15');
      }
    }
  });
});
