import { describe, expect, it } from 'vitest';
import { checkPlatformApi } from './api.js';

describe('Platform API', () => {
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
