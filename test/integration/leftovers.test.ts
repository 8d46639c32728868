import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest';
import { sweepDeadOciState } from '../../src/exec/oci.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { prepareBuildImageRootfs } from '../../src/phase/build-image.js';
import { processAlive } from '../../src/util/process.js';
import { makeTempDir } from '../../src/util/tempdir.js';
import { writeBusyboxBuildImage } from '../helpers/build-image.js';
import { compileSrcForChildProcesses } from '../helpers/compiled-src.js';
import { writeTestImage } from '../helpers/images.js';

/**
 * Nothing left behind by a writer killed with SIGKILL: temp files stay out of blobs/ (so `umoci gc` still
 * works on the layout), and what the dead process left is swept when the layout is next opened for writing
 * and when packfarm next makes a temp dir beside its leftovers in /tmp.
 */
let root: string;
let compiled: Awaited<ReturnType<typeof compileSrcForChildProcesses>>;
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-leftovers-'));
  compiled = await compileSrcForChildProcesses();
});
afterAll(async () => {
  await compiled?.cleanup();
  await rm(root, { recursive: true, force: true });
});

/**
 * A real process that starts an upload into the layout (its source never ends) and an exporter's scratch
 * dir, says "ready", and is then killed with SIGKILL mid-write.
 */
async function killWriterMidway(layout: string): Promise<void> {
  const script = `
    const { openLayoutStore } = await import(${JSON.stringify(join(compiled.dir, 'image', 'layout-store.js'))});
    const { Readable } = await import('node:stream');
    const { writeFile } = await import('node:fs/promises');
    const store = await openLayoutStore(${JSON.stringify(layout)}, { create: true });
    const scratch = await store.makeTempDir('export');
    await writeFile(scratch + '/partial-layer.tar.gz', Buffer.alloc(4096, 1));
    let sent = false;
    const endless = new Readable({ read() { if (!sent) { sent = true; this.push(Buffer.alloc(65536, 2)); console.log('ready'); } } });
    await store.putBlob({ open: () => endless });
  `;
  const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
    stdio: ['ignore', 'pipe', 'inherit'],
  });
  const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
  expect((await lines.next()).value).toBe('ready');
  const exited = new Promise((r) => child.on('exit', r));
  child.kill('SIGKILL');
  await exited;
}

describe('a layout written by a process killed with SIGKILL', () => {
  it('has nothing but blobs in blobs/, passes umoci gc, and is swept when next opened for writing', async () => {
    const layout = join(root, 'layout');
    await writeTestImage(await openLayoutStore(layout, { create: true }), { tag: 'app' });
    await killWriterMidway(layout);

    // The dead writer's partial upload and scratch dir exist, outside blobs/.
    expect(await readdir(join(layout, '.packfarm-tmp'))).toHaveLength(2);
    for (const name of await readdir(join(layout, 'blobs', 'sha256'))) expect(name).toMatch(/^[0-9a-f]{64}$/);
    const gc = await execa('umoci', ['gc', '--layout', layout], { reject: false, all: true });
    expect(gc.exitCode, gc.all).toBe(0);
    const skopeo = await execa('skopeo', ['inspect', `oci:${layout}:app`], { reject: false, all: true });
    expect(skopeo.exitCode, skopeo.all).toBe(0);

    await openLayoutStore(layout, { create: true });
    expect(await readdir(join(layout, '.packfarm-tmp'))).toEqual([]);
  });

  it('sweeps upload temp files older versions left inside blobs/ when opened for writing', async () => {
    const layout = join(root, 'legacy');
    await writeTestImage(await openLayoutStore(layout, { create: true }), { tag: 'app' });
    const legacy = join(layout, 'blobs', 'sha256', '.upload.999999999.0123456789ab.tmp');
    await writeFile(legacy, 'partial');
    await openLayoutStore(layout);
    expect(await readdir(join(layout, 'blobs', 'sha256'))).toContain('.upload.999999999.0123456789ab.tmp');
    await openLayoutStore(layout, { create: true });
    expect(await readdir(join(layout, 'blobs', 'sha256'))).not.toContain(
      '.upload.999999999.0123456789ab.tmp',
    );
  });
});

describe('temp dirs of dead processes', () => {
  it('are removed when packfarm next makes a temp dir beside them; live and foreign ones stay', async () => {
    const parent = join(root, 'tmp');
    const dead = join(parent, 'packfarm-build.p999999999-abcdef');
    const live = join(parent, `packfarm-build.p${process.pid}-ghijkl`);
    const foreign = join(parent, 'packfarm-something-else');
    for (const d of [dead, live, foreign]) await mkdir(join(d, 'workspace'), { recursive: true });
    const mine = await makeTempDir(parent, 'detect');
    expect((await readdir(parent)).sort()).toEqual(
      ['packfarm-build.p999999999-abcdef', ...[live, foreign, mine].map((p) => p.slice(parent.length + 1))]
        .filter((n) => n !== 'packfarm-build.p999999999-abcdef')
        .sort(),
    );
  });
});

describe('the oci executor of a process killed with SIGKILL', () => {
  it("leaves a state dir and a running container that the next packfarm stops and removes; a live process's stay", async () => {
    // Importing the executor registers its sweep hook, as it is registered in every packfarm process.
    expect(typeof sweepDeadOciState).toBe('function');
    const store = await openLayoutStore(join(root, 'oci-image'), { create: true });
    const img = await writeBusyboxBuildImage({
      store,
      tag: 'build',
      platform: { os: 'linux', architecture: 'amd64' },
    });
    const rootfs = await prepareBuildImageRootfs({
      store,
      image: img.digest,
      dataDir: join(root, 'oci-data'),
    });
    const ws = join(root, 'oci-ws');
    const dirs = {
      app: join(ws, 'app'),
      layers: join(ws, 'layers'),
      platform: join(ws, 'platform'),
      buildpacks: join(ws, 'bp'),
    };
    for (const d of Object.values(dirs)) await mkdir(d, { recursive: true });
    const stateParent = join(root, 'oci-state');
    await mkdir(stateParent);

    const script = `
      const { createOciExecutor } = await import(${JSON.stringify(join(compiled.dir, 'exec', 'oci.js'))});
      const exec = await createOciExecutor({
        rootfs: ${JSON.stringify(rootfs.dir)}, dirs: ${JSON.stringify(dirs)},
        uid: ${rootfs.config.uid}, gid: ${rootfs.config.gid}, env: {}, stateParent: ${JSON.stringify(stateParent)},
      });
      await exec.run({
        argv: ['/bin/sh', '-c', 'echo started; while :; do date >> /layers/still-writing; sleep 1; done'],
        cwd: '/workspace', env: { PATH: '/bin' },
        onStdout: (c) => { if (String(c).includes('started')) console.log('ready'); },
      });
    `;
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], {
      stdio: ['ignore', 'pipe', 'inherit'],
    });
    const lines = createInterface({ input: child.stdout })[Symbol.asyncIterator]();
    expect((await lines.next()).value).toBe('ready');
    const exited = new Promise((r) => child.on('exit', r));
    child.kill('SIGKILL');
    await exited;

    // Whatever the assertions say, the container must not outlive the test.
    onTestFinished(() => {
      for (const name of readdirSync(stateParent)) {
        const rr = join(stateParent, name, 'runc');
        for (const cid of existsSync(rr) ? readdirSync(rr) : [])
          spawnSync('/usr/sbin/runc', ['--root', rr, 'delete', '--force', cid]);
      }
    });
    const [dead, ...others] = await readdir(stateParent);
    expect(others).toEqual([]);
    expect(dead).toMatch(new RegExp(`^packfarm-oci\\.p${child.pid}-`));
    const runcRoot = join(stateParent, dead!, 'runc');
    const [id] = await readdir(runcRoot);
    const state = JSON.parse((await execa('/usr/sbin/runc', ['--root', runcRoot, 'state', id!])).stdout);
    // The container outlived its packfarm: it goes on writing into the build's layers dir.
    expect(state.status).toBe('running');
    expect(processAlive(state.pid)).toBe(true);

    const live = join(stateParent, `packfarm-oci.p${process.pid}-live`);
    await mkdir(join(live, 'runc'), { recursive: true });
    const next = await makeTempDir(stateParent, 'oci');
    expect((await readdir(stateParent)).sort()).toEqual(
      [live, next].map((p) => p.slice(stateParent.length + 1)).sort(),
    );
    // Killed; its parent (the dead packfarm's `runc run`) reaps it as it exits.
    for (let i = 0; i < 100 && processAlive(state.pid); i++) await new Promise((r) => setTimeout(r, 50));
    expect(processAlive(state.pid)).toBe(false);
  });
});
