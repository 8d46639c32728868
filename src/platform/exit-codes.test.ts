import { describe, expect, it } from 'vitest';
import { checkBuildpackApi } from '../buildpack/api.js';
import { PackfarmError } from '../util/errors.js';
import { asPhaseError, EXIT, exitCodeOf, mapErrorKinds, withExitCode } from './exit-codes.js';

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
    const specific = new PackfarmError('EXPORT_ERROR', 'x', { exitCode: 62, kind: 'buildpack-failed' });
    expect(exitCodeOf(specific)).toBe(62);
    expect(await mapErrorKinds(() => Promise.reject(specific)).catch((e) => e)).toBe(specific);
    const plain = new PackfarmError('MANIFEST_INVALID', 'y');
    expect(exitCodeOf(plain)).toBe(1);
    expect(await mapErrorKinds(() => Promise.reject(plain)).catch((e) => e)).toBe(plain);
    expect(exitCodeOf(new PackfarmError('BUILDPACK_BUILD_FAILED', 'z', { kind: 'buildpack-failed' }))).toBe(
      51,
    );
  });
});

describe('withExitCode: one way for every phase to give its failures its exit code', () => {
  const enoent = () =>
    Object.assign(new Error("ENOENT: no such file or directory, open '/x'"), { code: 'ENOENT' });

  it('turns a plain I/O error into the phase error, the same way in every phase', async () => {
    for (const [code, name] of [
      [EXIT.BUILD_ERROR, 'BUILD_ERROR'],
      [EXIT.EXPORT_ERROR, 'EXPORT_ERROR'],
      [EXIT.DETECT_ERROR, 'DETECT_ERROR'],
    ] as const) {
      const err = await withExitCode(code, () => Promise.reject(enoent())).catch((e) => e);
      expect(err).toBeInstanceOf(PackfarmError);
      expect(err.code).toBe(name);
      expect(err.exitCode).toBe(code);
      expect(err.message).toContain('ENOENT');
      expect(err.cause.code).toBe('ENOENT');
    }
  });

  it('gives generic errors the phase code, kinds their own code, and keeps specific codes', () => {
    expect(
      asPhaseError(new PackfarmError('MANIFEST_INVALID', 'x', { hint: 'h' }), EXIT.EXPORT_ERROR),
    ).toMatchObject({
      code: 'MANIFEST_INVALID',
      exitCode: 62,
      hint: 'h',
    });
    expect(
      asPhaseError(new PackfarmError('BUILDPACK_BUILD_FAILED', 'b', { kind: 'buildpack-failed' }), 52)
        .exitCode,
    ).toBe(51);
    const args = new PackfarmError('INVALID_ARGS', 'a', { exitCode: EXIT.INVALID_ARGS });
    expect(asPhaseError(args, 62)).toBe(args);
  });
});
