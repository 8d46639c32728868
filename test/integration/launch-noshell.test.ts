import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLayoutStore } from '../../src/image/layout-store.js';
import type { LayoutStore } from '../../src/image/layout-store.js';
import type { GroupFile } from '../../src/platform/files.js';
import { SHELL_LABEL, exportImage } from '../../src/phase/export.js';
import { type PodmanRunner, createPodmanRunner, createRunImage } from '../helpers/run-image.js';
import { buildWorkspace } from '../helpers/workspace.js';

/**
 * A run image without /bin/sh (spec/launch.md): the default process is resolved into the config
 * (Entrypoint, Cmd, Env incl. its process-specific env) and runs; export warns about what cannot work.
 */

let root: string;
let podman: PodmanRunner;
let runStore: LayoutStore;

async function buildApp(id: string) {
  const group: GroupFile = { group: [{ id, version: '1.0.0', api: '0.12' }] };
  return buildWorkspace(join(root, id), { buildpacks: 'export', group });
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-noshell-'));
  podman = await createPodmanRunner();
  runStore = await openLayoutStore(join(root, 'run'), { create: true });
  await createRunImage({
    store: runStore,
    tag: 'noshell',
    noShell: true,
    labels: { [SHELL_LABEL]: 'false' },
  });
});
afterAll(async () => {
  await podman?.cleanup();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('a run image without /bin/sh', () => {
  it('runs the default process from the static config, with its process-specific env', async () => {
    const ws = await buildApp('export/noshell');
    const out = await openLayoutStore(join(root, 'out'), { create: true });
    const r = await exportImage({
      layersDir: ws.layers,
      appDir: ws.app,
      group: ws.group,
      runImage: { store: runStore, target: 'noshell' },
      outputs: [{ store: out, tags: ['app'] }],
    });
    expect(r.warnings).toEqual([]);
    const sh = await podman.run(`oci:${join(root, 'run')}:noshell`, { entrypoint: '/bin/sh' });
    expect(sh.exitCode).not.toBe(0);
    const run = await podman.run(`oci:${join(root, 'out')}:app`);
    expect(run.stderr).toBe('');
    // Default args: `env -0` (NUL-separated).
    const vars = run.stdout.split('\0');
    expect(vars).toContain('GREETING=hi');
    expect(vars).toContain('WEB_ONLY=static');
    expect(vars).toContain(
      'PATH=/cnb/process:/cnb/lifecycle:/layers/export_noshell/tools/bin:/usr/local/bin:/usr/bin:/bin',
    );
    // User args replace the default args.
    const replaced = await podman.run(`oci:${join(root, 'out')}:app`, { args: ['-u', 'WEB_ONLY'] });
    expect(replaced.stdout).toContain('GREETING=hi\n');
    expect(replaced.stdout).not.toContain('WEB_ONLY');
  });

  it('warns about process types and exec.d that cannot work', async () => {
    const ws = await buildApp('export/hello');
    const out = await openLayoutStore(join(root, 'out2'), { create: true });
    const r = await exportImage({
      layersDir: ws.layers,
      appDir: ws.app,
      group: ws.group,
      runImage: { store: runStore, target: 'noshell' },
      outputs: [{ store: out, tags: ['app'] }],
    });
    expect(r.warnings.join('\n')).toMatch(/exec\.d/);
    expect(r.warnings.join('\n')).toMatch(/only the default process/);
  });
});
