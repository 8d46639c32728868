import { describe, expect, it } from 'vitest';
import { parseToml } from '../util/toml.js';
import { encodeReport, parseReport } from './report.js';

describe('report.toml', () => {
  it('writes the keys platform.md names and reads them back', () => {
    const text = encodeReport({
      image: { tags: ['r.example/app:1', 'r.example/app:latest'], digest: 'sha256:abc', manifestSize: 1234 },
    });
    expect(parseToml(text, 'report.toml')).toEqual({
      image: {
        tags: ['r.example/app:1', 'r.example/app:latest'],
        digest: 'sha256:abc',
        'manifest-size': 1234,
      },
    });
    expect(parseReport(text, 'report.toml').image.manifestSize).toBe(1234);
  });
  it('rejects a malformed manifest size, naming the file', () => {
    expect(() => parseReport('[image]\nmanifest-size = "x"\n', '/l/report.toml')).toThrow(/\/l\/report.toml/);
  });
});
