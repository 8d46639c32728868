import { describe, expect, it } from 'vitest';
import { parseBuildToml } from './build-toml.js';
import { encodeStoreToml, parseStoreToml } from './store.js';

const opts = { source: '/layers/bp/build.toml', buildpackId: 'bp', planNames: ['node', 'npm'] };

describe('parseBuildToml', () => {
  it('reads unmet names that are in the plan', () => {
    expect(parseBuildToml('[[unmet]]\nname = "npm"\n', opts)).toEqual({ unmet: ['npm'], bom: [] });
    expect(parseBuildToml('', opts)).toEqual({ unmet: [], bom: [] });
  });
  it('rejects unmet names that are not in the plan, naming the field', () => {
    expect(() => parseBuildToml('[[unmet]]\nname = "ruby"\n', opts)).toThrow(
      /\/layers\/bp\/build\.toml \(buildpack bp\): unmet\[0\]\.name: "ruby" is not an entry/,
    );
  });
  it('rejects an unmet entry without name', () => {
    expect(() => parseBuildToml('[[unmet]]\n', opts)).toThrow(/unmet\[0\]\.name/);
  });
});

describe('store.toml', () => {
  it('round-trips free-form metadata', () => {
    const store = parseStoreToml('[metadata]\ncount = 3\n[metadata.nested]\nk = "v"\n', 'store.toml');
    expect(store).toEqual({ metadata: { count: 3, nested: { k: 'v' } } });
    expect(parseStoreToml(encodeStoreToml(store), 'again')).toEqual(store);
  });
  it('rejects a non-table metadata', () => {
    expect(() => parseStoreToml('metadata = 3\n', '/l/store.toml')).toThrow(/\/l\/store\.toml.*metadata/);
  });
});
