import { mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { onSweep, sweepDeadTemps } from './tempdir.js';

let parent: string;
beforeEach(async () => {
  parent = await mkdtemp(join(tmpdir(), 'pf-tempdir-'));
});
afterEach(async () => {
  await rm(parent, { recursive: true, force: true });
});

describe('sweepDeadTemps', () => {
  it("keeps a dead owner's oci state until a process that can stop its containers sweeps it", async () => {
    // No pid reaches 2^22 + 1 (Linux's pid_max is at most 2^22): these owners are dead.
    const dead = 2 ** 22 + 1;
    for (const name of [
      `packfarm-oci.p${dead}-aaa`,
      `packfarm-build.p${dead}-bbb`,
      `packfarm-oci.p${process.pid}-ccc`,
    ])
      await mkdir(join(parent, name, 'runc'), { recursive: true });

    // This process has not loaded the oci executor (which registers the hook): the state dir stays.
    expect(await sweepDeadTemps(parent)).toEqual([`packfarm-build.p${dead}-bbb`]);
    expect((await readdir(parent)).sort()).toEqual(
      [`packfarm-oci.p${dead}-aaa`, `packfarm-oci.p${process.pid}-ccc`].sort(),
    );

    const hooked: string[] = [];
    onSweep('oci', async (path) => {
      hooked.push(path);
    });
    expect(await sweepDeadTemps(parent)).toEqual([`packfarm-oci.p${dead}-aaa`]);
    expect(hooked).toEqual([join(parent, `packfarm-oci.p${dead}-aaa`)]);
    // A live owner's dir is never touched.
    expect(await readdir(parent)).toEqual([`packfarm-oci.p${process.pid}-ccc`]);
  });
});
