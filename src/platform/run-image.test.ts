import { describe, expect, it } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import { selectRunImage } from './run-image.js';

/** Which references a fake registry lets us read, and the order they were asked about. */
function access(readable: string[]) {
  const asked: string[] = [];
  return {
    asked,
    canRead: async (ref: string) => {
      asked.push(ref);
      return readable.includes(ref);
    },
  };
}

const run = (images: { image: string; mirrors?: string[] }[]) => ({ images });

describe('selectRunImage', () => {
  it('takes the image of the first entry when it is readable, recording the entry', async () => {
    const a = access(['r.example/run:1', 'm.example/run:1']);
    const got = await selectRunImage({
      run: run([{ image: 'r.example/run:1', mirrors: ['m.example/run:1'] }]),
      runPath: '/cnb/run.toml',
      outputImage: 'o.example/app',
      canRead: a.canRead,
    });
    expect(got).toEqual({
      reference: 'r.example/run:1',
      image: 'r.example/run:1',
      mirrors: ['m.example/run:1'],
    });
    expect(a.asked).toEqual(['r.example/run:1']);
  });

  it("asks mirrors on the output image's registry first", async () => {
    const a = access(['r.example/run:1', 'o.example/mirror/run:1']);
    const got = await selectRunImage({
      run: run([{ image: 'r.example/run:1', mirrors: ['x.example/run:1', 'o.example/mirror/run:1'] }]),
      runPath: 'run.toml',
      outputImage: 'o.example/app:latest',
      canRead: a.canRead,
    });
    expect(got.reference).toBe('o.example/mirror/run:1');
    expect(got.image).toBe('r.example/run:1');
    expect(a.asked).toEqual(['o.example/mirror/run:1']);
  });

  it('goes on to later entries when nothing of an entry is readable; a throwing check counts as unreadable', async () => {
    const asked: string[] = [];
    const got = await selectRunImage({
      run: run([{ image: 'a.example/run', mirrors: ['b.example/run'] }, { image: 'c.example/run' }]),
      runPath: 'run.toml',
      outputImage: 'o.example/app',
      canRead: async (ref) => {
        asked.push(ref);
        if (ref === 'b.example/run') throw new Error('connection refused');
        return ref === 'c.example/run';
      },
    });
    expect(got).toEqual({ reference: 'c.example/run', image: 'c.example/run', mirrors: [] });
    expect(asked).toEqual(['a.example/run', 'b.example/run', 'c.example/run']);
  });

  it('fails with exit 3 and the reference message when nothing is readable or run.toml lists nothing', async () => {
    const none = await selectRunImage({
      run: run([{ image: 'a.example/run' }]),
      runPath: 'run.toml',
      outputImage: 'o.example/app',
      canRead: async () => false,
    }).catch((e: unknown) => e);
    expect(isPackfarmError(none, 'RUN_IMAGE_INACCESSIBLE')).toBe(true);
    expect((none as Error).message).toMatch(/^failed to find accessible run image: none of a\.example\/run/);
    expect((none as { exitCode: number }).exitCode).toBe(3);
    const empty = await selectRunImage({
      run: run([]),
      runPath: 'run.toml',
      outputImage: 'o.example/app',
      canRead: async () => true,
    }).catch((e: unknown) => e);
    expect(isPackfarmError(empty, 'RUN_IMAGE_MISSING')).toBe(true);
    expect((empty as { exitCode: number }).exitCode).toBe(3);
  });
});
