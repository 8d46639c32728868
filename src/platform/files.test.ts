import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  readAnalyzedFile,
  readGroupFile,
  readOrderFile,
  readPlanFile,
  readRunFile,
  readSystemFile,
  runImageTargetOf,
  writeGroupFile,
  writePlanFile,
} from './files.js';

let dir: string;
beforeAll(async () => {
  dir = await mkdtemp(join(tmpdir(), 'platform-files-'));
});
afterAll(async () => {
  await rm(dir, { recursive: true, force: true });
});

async function put(name: string, text: string): Promise<string> {
  const p = join(dir, name);
  await writeFile(p, text);
  return p;
}

describe('order.toml', () => {
  it('reads groups and extension orders', async () => {
    const p = await put(
      'order.toml',
      '[[order]]\n[[order.group]]\nid = "a/b"\nversion = "1.0.0"\noptional = true\n[[order-extensions]]\n[[order-extensions.group]]\nid = "e"\nversion = "1"\n',
    );
    const o = await readOrderFile(p);
    expect(o.order[0]?.group[0]).toEqual({ id: 'a/b', version: '1.0.0', optional: true });
    expect(o['order-extensions']?.[0]?.group[0]?.id).toBe('e');
  });

  it('names the file and the field when an entry is wrong', async () => {
    const p = await put('bad-order.toml', '[[order]]\n[[order.group]]\nid = "a"\n');
    await expect(readOrderFile(p)).rejects.toThrow(`${p}: invalid content: order[0].group[0].version`);
    const q = await put(
      'bad-order2.toml',
      '[[order]]\n[[order.group]]\nid = "a"\nversion = "1"\noptional = "yes"\n',
    );
    await expect(readOrderFile(q)).rejects.toThrow(/order\[0\]\.group\[0\]\.optional/);
    const r = await put('bad-order3.toml', '[[order]\n');
    await expect(readOrderFile(r)).rejects.toThrow(/not valid TOML at line 1, column \d+: [a-z][^\n]*\.$/);
    await expect(readOrderFile(join(dir, 'nope.toml'))).rejects.toThrow(/order file not found/);
  });
});

describe('group.toml and plan.toml', () => {
  it('round-trip, leaving out empty optional keys', async () => {
    const g = join(dir, 'group.toml');
    await writeGroupFile(g, {
      group: [
        { id: 'a', version: '1', api: '0.12', homepage: 'https://a' },
        { id: 'b', version: '2', api: '0.10' },
      ],
    });
    const text = await readFile(g, 'utf8');
    expect(text).not.toContain('optional');
    expect((await readGroupFile(g)).group).toEqual([
      { id: 'a', version: '1', api: '0.12', homepage: 'https://a' },
      { id: 'b', version: '2', api: '0.10' },
    ]);

    const p = join(dir, 'plan.toml');
    const plan = {
      entries: [
        {
          providers: [{ id: 'a', version: '1' }],
          requires: [{ name: 'node', metadata: { version: '20', build: true } }, { name: 'node' }],
        },
      ],
    };
    await writePlanFile(p, plan);
    expect(await readPlanFile(p)).toEqual(plan);
  });

  it('checks the plan.toml rules', async () => {
    const p = await put(
      'bad-plan.toml',
      '[[entries]]\n[[entries.providers]]\nid="a"\nversion="1"\n[[entries.requires]]\nname="x"\n[[entries.requires]]\nname="y"\n',
    );
    await expect(readPlanFile(p)).rejects.toThrow(
      /entries\[0\]\.requires: all requires of an entry must have the same name/,
    );
  });
});

describe('analyzed.toml', () => {
  it('reads the run image target with either variant key and keeps other tables', async () => {
    const p = await put(
      'analyzed.toml',
      '[image]\nreference = "r@sha256:1"\n[metadata]\n[metadata.x]\ny = 1\n[run-image]\nreference = "run@sha256:2"\n[run-image.target]\nos = "linux"\narch = "arm"\narch-variant = "v7"\n[run-image.target.distro]\nname = "debian"\nversion = "12"\n',
    );
    const a = await readAnalyzedFile(p);
    expect(a?.metadata).toEqual({ x: { y: 1 } });
    expect(runImageTargetOf(a)).toEqual({
      os: 'linux',
      arch: 'arm',
      variant: 'v7',
      distro: { name: 'debian', version: '12' },
    });
    const q = await put(
      'analyzed2.toml',
      '[run-image]\nreference = ""\n[run-image.target]\nos = "linux"\narch = "arm64"\nvariant = "v8"\n',
    );
    expect(runImageTargetOf(await readAnalyzedFile(q))).toEqual({
      os: 'linux',
      arch: 'arm64',
      variant: 'v8',
    });
    expect(await readAnalyzedFile(join(dir, 'none.toml'), { missingOk: true })).toBeUndefined();
    await expect(readAnalyzedFile(join(dir, 'none.toml'))).rejects.toThrow(/analyzed file not found/);
  });
});

describe('run.toml and system.toml', () => {
  it('reads both and treats a missing file as empty', async () => {
    const r = await put('run.toml', '[[images]]\nimage = "reg/run:1"\nmirrors = ["m/run:1"]\n');
    expect(await readRunFile(r)).toEqual({ images: [{ image: 'reg/run:1', mirrors: ['m/run:1'] }] });
    expect(await readRunFile(join(dir, 'none.toml'))).toEqual({ images: [] });
    const s = await put('system.toml', '[[system.pre.buildpacks]]\nid = "p"\nversion = "1"\n');
    expect((await readSystemFile(s)).system.pre?.buildpacks).toEqual([{ id: 'p', version: '1' }]);
    expect(await readSystemFile(join(dir, 'none.toml'))).toEqual({ system: {} });
  });
});
