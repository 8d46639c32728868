import { describe, expect, it } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import type { Executor } from './executor.js';
import { createHostExecutor } from './host.js';
import { hostToInside, toExecutorView } from './view.js';

const mounted: Executor = {
  kind: 'oci',
  run: async () => ({ exitCode: 0 }),
  hostPaths: {
    app: '/tmp/b/app',
    layers: '/tmp/b/layers',
    platform: '/tmp/b/platform',
    buildpacks: '/data/bps',
    scratch: '/tmp/b/app-scratch',
  },
  paths: {
    app: '/workspace',
    layers: '/layers',
    platform: '/platform',
    buildpacks: '/cnb/buildpacks',
    scratch: '/cnb/scratch',
  },
};

describe('host → container paths', () => {
  it('rewrites whole paths and prefixes in lists and command lines, never look-alikes', () => {
    const map = hostToInside([
      ['/tmp/b/app', '/workspace'],
      ['/tmp/b/app-scratch', '/cnb/scratch'],
      ['/tmp/b/layers', '/layers'],
    ]);
    expect(map('/tmp/b/layers/bp/node/bin:/usr/bin:/tmp/b/app')).toBe(
      '/layers/bp/node/bin:/usr/bin:/workspace',
    );
    expect(map('/tmp/b/app-scratch/plan.toml')).toBe('/cnb/scratch/plan.toml');
    expect(map('/tmp/b/application /x/tmp/b/app')).toBe('/tmp/b/application /x/tmp/b/app');
    expect(map('cd "/tmp/b/app/src" && make')).toBe('cd "/workspace/src" && make');
  });

  it('translates argv, cwd and env of a spec; the host executor keeps specs as they are', () => {
    const spec = {
      argv: [
        '/data/bps/x/1/bin/build',
        '/tmp/b/layers/x',
        '/tmp/b/platform',
        '/tmp/b/app-scratch/p/plan.toml',
      ],
      cwd: '/tmp/b/app',
      env: { CNB_BUILDPACK_DIR: '/data/bps/x/1', PATH: '/tmp/b/layers/y/l/bin:/usr/bin', USER_VAR: 'a=b' },
    };
    expect(toExecutorView(mounted, spec)).toEqual({
      argv: ['/cnb/buildpacks/x/1/bin/build', '/layers/x', '/platform', '/cnb/scratch/p/plan.toml'],
      cwd: '/workspace',
      env: { CNB_BUILDPACK_DIR: '/cnb/buildpacks/x/1', PATH: '/layers/y/l/bin:/usr/bin', USER_VAR: 'a=b' },
    });
    expect(toExecutorView(createHostExecutor(), spec)).toBe(spec);
  });

  it('an executable outside every mount is a clear error', () => {
    try {
      toExecutorView(mounted, { argv: ['/opt/bp/bin/detect'], cwd: '/tmp/b/app', env: {} });
      expect.unreachable();
    } catch (err) {
      expect(isPackfarmError(err, 'EXEC_PATH_NOT_MOUNTED')).toBe(true);
      expect((err as Error).message).toContain('/opt/bp/bin/detect');
    }
  });
});
