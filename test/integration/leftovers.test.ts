import { spawn } from 'node:child_process';
import { mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { makeTempDir } from '../../src/util/tempdir.js';
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
