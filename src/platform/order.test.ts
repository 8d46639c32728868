import { describe, expect, it } from 'vitest';
import type { Order, OrderElement } from '../buildpack/descriptor.js';
import { mergeSystemBuildpacks } from './order.js';

const el = (id: string, optional = false): OrderElement => ({ id, version: '1', optional });

describe('mergeSystemBuildpacks', () => {
  it('adds pre and post buildpacks to every group unless the group has that ID', () => {
    const order: Order = [{ group: [el('A'), el('post')] }, { group: [el('B')] }];
    const merged = mergeSystemBuildpacks(order, {
      system: {
        pre: { buildpacks: [{ id: 'pre', version: '1' }] },
        post: { buildpacks: [{ id: 'post', version: '9', optional: true }] },
      },
    });
    expect(
      merged.map((g) => g.group.map((e) => `${e.id}@${e.version}${e.optional ? '?' : ''}`).join(',')),
    ).toEqual(['pre@1,A@1,post@1', 'pre@1,B@1,post@9?']);
  });
});
