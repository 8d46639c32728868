import { describe, expect, it } from 'vitest';
import { insecureRegistriesFromEnv, isInsecureRegistry, splitHostPort } from './insecure.js';

describe('insecure registries', () => {
  it('splits hosts and ports, IPv6 included', () => {
    expect(splitHostPort('Registry.Example:5000')).toEqual({ host: 'registry.example', port: '5000' });
    expect(splitHostPort('[::1]:5000')).toEqual({ host: '::1', port: '5000' });
    expect(splitHostPort('::1')).toEqual({ host: '::1' });
    expect(splitHostPort('http://h:1/v2/')).toEqual({ host: 'h', port: '1' });
  });

  it('matches host:port exactly, and a bare host on any port', () => {
    expect(isInsecureRegistry('127.0.0.1:5000', ['127.0.0.1:5000'])).toBe(true);
    expect(isInsecureRegistry('127.0.0.1:5001', ['127.0.0.1:5000'])).toBe(false);
    expect(isInsecureRegistry('127.0.0.1', ['127.0.0.1:5000'])).toBe(false);
    expect(isInsecureRegistry('localhost:5000', ['localhost'])).toBe(true);
    expect(isInsecureRegistry('LOCALHOST:7', ['localhost'])).toBe(true);
    expect(isInsecureRegistry('[::1]:5000', ['::1'])).toBe(true);
    expect(isInsecureRegistry('registry.example', ['other.example', ''])).toBe(false);
    expect(isInsecureRegistry('registry.example', undefined)).toBe(false);
  });

  it('reads CNB_INSECURE_REGISTRIES (comma separated, spaces tolerated, no duplicates)', () => {
    expect(insecureRegistriesFromEnv({ CNB_INSECURE_REGISTRIES: 'a:1, b ,,a:1,c' })).toEqual([
      'a:1',
      'b',
      'c',
    ]);
    expect(insecureRegistriesFromEnv({})).toEqual([]);
  });
});
