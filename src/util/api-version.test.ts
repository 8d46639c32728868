import { describe, expect, it } from 'vitest';
import { SUPPORTED_BUILDPACK_APIS } from '../buildpack/api.js';
import {
  apiAtLeast,
  compareApiVersions,
  isApiSupported,
  parseApiVersion,
  tryParseApiVersion,
} from './api-version.js';

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
});
