import { describe, expect, it } from 'vitest';
import {
  insecureRegistriesFromEnv,
  isInsecureRegistry,
  isLoopbackRegistry,
  splitHostPort,
} from './insecure.js';

describe('insecure registries', () => {
  it('splits hosts and ports, IPv6 included', () => {
    expect(splitHostPort('Registry.Example:5000')).toEqual({ host: 'registry.example', port: '5000' });
    expect(splitHostPort('[::1]:5000')).toEqual({ host: '::1', port: '5000' });
    expect(splitHostPort('::1')).toEqual({ host: '::1' });
    expect(splitHostPort('http://h:1/v2/')).toEqual({ host: 'h', port: '1' });
  });

  it('matches host:port exactly, and a bare host on any port', () => {
    expect(isInsecureRegistry('10.0.0.1:5000', ['10.0.0.1:5000'])).toBe(true);
    expect(isInsecureRegistry('10.0.0.1:5001', ['10.0.0.1:5000'])).toBe(false);
    expect(isInsecureRegistry('10.0.0.1', ['10.0.0.1:5000'])).toBe(false);
    expect(isInsecureRegistry('reg.local:5000', ['reg.local'])).toBe(true);
    expect(isInsecureRegistry('REG.LOCAL:7', ['reg.local'])).toBe(true);
    expect(isInsecureRegistry('[fd00::1]:5000', ['fd00::1'])).toBe(true);
    expect(isInsecureRegistry('registry.example', ['other.example', ''])).toBe(false);
    expect(isInsecureRegistry('registry.example', undefined)).toBe(false);
  });

  it('treats loopback registries as insecure without a flag, and nothing else', () => {
    for (const r of [
      'localhost',
      'localhost:5000',
      'LocalHost:1',
      '127.0.0.1:5000',
      '127.1.2.3',
      '[::1]:5000',
      '::1',
    ])
      expect(isInsecureRegistry(r, []), r).toBe(true);
    for (const r of [
      'localhost5000',
      'localhost.example:5000',
      '127.0.0.256',
      '128.0.0.1:5000',
      '[::2]:5000',
      '10.0.0.1',
    ])
      expect(isInsecureRegistry(r, undefined), r).toBe(false);
    expect(isLoopbackRegistry('127.0.0.1:5000')).toBe(true);
    expect(isLoopbackRegistry('docker.io')).toBe(false);
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
