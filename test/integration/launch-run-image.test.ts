import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { registryStore } from '../helpers/cli.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import {
  type PodmanRunner,
  createPodmanRunner,
  createRunImage,
  createVersionedRunImage,
} from '../helpers/run-image.js';

// The run image every export/launch/rebase test builds on must itself run under podman, from a layout and from
// the registry.
describe('test run image', () => {
  let dir: string;
  let registry: TestRegistry;
  let podman: PodmanRunner;

  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'pf-runimage-'));
    registry = await startRegistry();
    podman = await createPodmanRunner();
  });
  afterAll(async () => {
    await podman?.cleanup();
    await registry?.stop();
    await rm(dir, { recursive: true, force: true });
  });

  it('runs from an OCI layout as the cnb user', async () => {
    const store = await openLayoutStore(join(dir, 'layout'), { create: true });
    const img = await createRunImage({ store, tag: 'run' });
    expect(img.layers).toHaveLength(1);
    const r = await podman.run(`oci:${join(dir, 'layout')}:run`, {
      args: ['sh', '-c', 'id -u; echo $PATH; ls -ld /tmp'],
    });
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.exitCode).toBe(0);
    const [uid, path, tmp] = r.stdout.split('\n');
    expect(uid).toBe('1000');
    expect(path).toBe('/usr/local/bin:/usr/bin:/bin');
    expect(tmp).toMatch(/^drwxrwxrwt/);
  });

  it('runs from the registry, and v1/v2 differ', async () => {
    const store = registryStore(registry, 'run');
    const v1 = await createVersionedRunImage({ store, tag: 'v1', version: 1 });
    const v2 = await createVersionedRunImage({ store, tag: 'v2', version: 2 });
    expect(v1.digest).not.toBe(v2.digest);
    const again = await createVersionedRunImage({ store, tag: 'v1', version: 1 });
    expect(again.digest).toBe(v1.digest);
    const r = await podman.run(`${registry.host}/run:v2`, { args: ['cat', '/etc/run-image-version'] });
    expect(r.stderr).not.toMatch(/Error/);
    expect(r.stdout.trim()).toBe('2');
  });
});
