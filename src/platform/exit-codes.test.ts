import { describe, expect, it } from 'vitest';
import { checkBuildpackApi } from '../buildpack/api.js';
import { PackfarmError } from '../util/errors.js';
import { EXIT, exitCodeOf, mapErrorKinds } from './exit-codes.js';

describe('error kinds → exit codes', () => {
  it('gives a buildpack-contract error the exit code of its kind, and keeps code, message and hint', async () => {
    const err = await mapErrorKinds(async () => checkBuildpackApi('0.1', 'buildpack a@1')).catch((e) => e);
    expect(err).toBeInstanceOf(PackfarmError);
    expect(err.exitCode).toBe(EXIT.INCOMPATIBLE_BUILDPACK_API);
    expect(err.code).toBe('INCOMPATIBLE_BUILDPACK_API');
    expect(err.message).toContain('buildpack a@1');
    expect(err.hint).toContain('supported Buildpack API');
  });

  it('keeps a specific exit code and leaves other errors alone', async () => {
    const specific = new PackfarmError('X', 'x', { exitCode: 62, kind: 'buildpack-failed' });
    expect(exitCodeOf(specific)).toBe(62);
    expect(await mapErrorKinds(() => Promise.reject(specific)).catch((e) => e)).toBe(specific);
    const plain = new PackfarmError('Y', 'y');
    expect(exitCodeOf(plain)).toBe(1);
    expect(await mapErrorKinds(() => Promise.reject(plain)).catch((e) => e)).toBe(plain);
    expect(exitCodeOf(new PackfarmError('Z', 'z', { kind: 'buildpack-failed' }))).toBe(51);
  });
});
