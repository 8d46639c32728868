import { describe, expect, it } from 'vitest';
import { hostPathRewriter, processesToImagePaths } from './host-paths.js';

describe('hostPathRewriter', () => {
  const rw = hostPathRewriter(
    { appDir: '/tmp/b/workspace/', layersDir: '/tmp/b/layers' },
    { appDir: '/workspace', layersDir: '/layers' },
  );

  it('rewrites whole path prefixes only', () => {
    expect(rw('/tmp/b/workspace')).toBe('/workspace');
    expect(rw('/tmp/b/workspace/app.sh')).toBe('/workspace/app.sh');
    expect(rw('/tmp/b/layers/bp/bin:/usr/bin')).toBe('/layers/bp/bin:/usr/bin');
    expect(rw('cd /tmp/b/workspace && run')).toBe('cd /workspace && run');
    expect(rw('/tmp/b/workspace2/x')).toBe('/tmp/b/workspace2/x');
    expect(rw('/other/tmp/b/layers')).toBe('/other/tmp/b/layers');
    expect(rw('X=/tmp/b/layers/y')).toBe('X=/layers/y');
  });

  it('rewrites a layers dir inside the app dir to the image layers dir, not under /workspace', () => {
    const nested = hostPathRewriter(
      { appDir: '/tmp/b', layersDir: '/tmp/b/layers' },
      { appDir: '/workspace', layersDir: '/layers' },
    );
    expect(nested('/tmp/b/layers/bp/bin:/tmp/b/app.sh')).toBe('/layers/bp/bin:/workspace/app.sh');
  });

  it('is the identity when the paths are already the image paths', () => {
    const id = hostPathRewriter(
      { appDir: '/workspace', layersDir: '/layers' },
      { appDir: '/workspace', layersDir: '/layers' },
    );
    expect(id('/workspace/x')).toBe('/workspace/x');
  });

  it('rewrites process commands, args and working dirs', () => {
    const md = processesToImagePaths(
      {
        buildpacks: [],
        extensions: [],
        processes: [
          {
            type: 'web',
            command: ['/tmp/b/workspace/app.sh'],
            args: ['--data', '/tmp/b/layers/bp/data'],
            direct: true,
            workingDir: '/tmp/b/workspace/sub',
            execEnv: undefined,
            buildpackId: 'bp',
          },
        ],
        slices: [],
        labels: [],
        buildpackDefaultProcessType: undefined,
        bom: [],
      },
      rw,
    );
    expect(md.processes[0]).toMatchObject({
      command: ['/workspace/app.sh'],
      args: ['--data', '/layers/bp/data'],
      workingDir: '/workspace/sub',
    });
  });
});
