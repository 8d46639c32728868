import { describe, expect, it } from 'vitest';
import type { BuildpackDescriptor, Order, OrderElement } from './descriptor.js';
import { expandOrder } from './order.js';

const el = (id: string, optional = false): OrderElement => ({ id, version: '1', optional });

function fakeLookup(composites: Record<string, Order>) {
  const looked: string[] = [];
  const lookup = async (id: string, version: string): Promise<BuildpackDescriptor> => {
    looked.push(id);
    return {
      api: '0.12',
      id,
      version,
      keywords: [],
      licenses: [],
      clearEnv: false,
      sbomFormats: [],
      execEnv: [],
      order: composites[id] ?? [],
      targets: [],
      targetsFrom: 'none',
      stacks: [],
      dir: `/bp/${id}`,
      path: `/bp/${id}/buildpack.toml`,
    };
  };
  return { lookup, looked };
}

async function all(order: Order, composites: Record<string, Order>): Promise<string[]> {
  const out: string[] = [];
  for await (const g of expandOrder(order, fakeLookup(composites).lookup))
    out.push(g.map((e) => e.id + (e.optional ? '?' : '')).join(','));
  return out;
}

describe('expandOrder', () => {
  const O: Order = [{ group: [el('A'), el('B')] }, { group: [el('C'), el('D')] }];
  const P: Order = [{ group: [el('E'), el('F')] }, { group: [el('G'), el('H')] }];

  it('expands a composite in place, depth first, left to right (spec example [E, O, F])', async () => {
    expect(await all([{ group: [el('E'), el('O'), el('F')] }], { O })).toEqual(['E,A,B,F', 'E,C,D,F']);
  });

  it('expands consecutive composites as a product (spec example [O, P])', async () => {
    expect(await all([{ group: [el('O'), el('P')] }], { O, P })).toEqual([
      'A,B,E,F',
      'A,B,G,H',
      'C,D,E,F',
      'C,D,G,H',
    ]);
  });

  it('follows an optional composite with a copy of the group without it', async () => {
    expect(await all([{ group: [el('E'), el('O', true), el('F')] }], { O })).toEqual([
      'E,A,B,F',
      'E,C,D,F',
      'E,F',
    ]);
  });

  it('expands nested composites and keeps the optional flags of elements', async () => {
    const N: Order = [{ group: [el('X', true), el('O')] }];
    expect(await all([{ group: [el('N')] }, { group: [el('Z')] }], { N, O })).toEqual([
      'X?,A,B',
      'X?,C,D',
      'Z',
    ]);
  });

  it('is lazy: later groups are not looked up before they are asked for', async () => {
    const { lookup, looked } = fakeLookup({});
    const it = expandOrder([{ group: [el('A')] }, { group: [el('B')] }], lookup);
    await it.next();
    expect(looked).toEqual(['A']);
  });

  it('refuses composites that contain themselves', async () => {
    const C: Order = [{ group: [el('D')] }];
    const D: Order = [{ group: [el('C')] }];
    await expect(all([{ group: [el('C')] }], { C, D })).rejects.toThrow(
      /composite buildpack C@1 contains itself \(C@1 → D@1 → C@1\)/,
    );
  });
});

describe('expandOrder with the same composite in sibling positions', () => {
  it('is not mistaken for a cycle', async () => {
    const O: Order = [{ group: [el('A')] }];
    const W: Order = [{ group: [el('O')] }];
    expect(await all([{ group: [el('W'), el('O')] }], { O, W })).toEqual(['A,A']);
  });
});
