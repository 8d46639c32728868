import { PackfarmError } from '../util/errors.js';
import { type BuildpackDescriptor, type Order, type OrderElement, isComposite } from './descriptor.js';

/**
 * Order resolution (buildpack.md "Order Resolution"): which groups of buildpacks detection tries, in which
 * sequence, after composite buildpacks are expanded. Reading order.toml and system.toml is platform/order.ts.
 */

/** Finds buildpack descriptors (normally a cached `BuildpackStore.lookup`). */
export type LookupBuildpack = (id: string, version: string) => Promise<BuildpackDescriptor>;

/**
 * The candidate groups of an order, lazily and in the sequence detection must try them: composite buildpacks
 * are expanded depth-first, left to right (a group [E, O, F] with O = [[A, B], [C, D]] yields [E, A, B, F]
 * then [E, C, D, F]); an optional composite is followed by a copy of the group without it. Elements keep their
 * own `optional` flags. Lazy, because the first passing group ends detection and a full expansion can be
 * large (it is a cartesian product).
 *
 * Component buildpacks are returned as they are; deduplication by ID (a buildpack listed twice in one
 * flattened group runs once) is the detector's job because it depends on what detection skipped.
 * A composite that (indirectly) contains itself is an error rather than endless recursion.
 */
export async function* expandOrder(order: Order, lookup: LookupBuildpack): AsyncGenerator<OrderElement[]> {
  for (const g of order)
    yield* expandGroup(
      [],
      g.group.map((el) => ({ el, within: [] })),
      lookup,
    );
}

/** An element still to expand, with the composites it came from (to recognise a composite inside itself). */
interface Pending {
  el: OrderElement;
  within: readonly string[];
}

async function* expandGroup(
  done: OrderElement[],
  rest: readonly Pending[],
  lookup: LookupBuildpack,
): AsyncGenerator<OrderElement[]> {
  const prefix = [...done];
  for (let i = 0; i < rest.length; i++) {
    const { el, within } = rest[i]!;
    const d = await lookup(el.id, el.version);
    if (!isComposite(d)) {
      prefix.push(el);
      continue;
    }
    const key = `${el.id}@${el.version}`;
    if (within.includes(key))
      throw new PackfarmError(
        'ORDER_CYCLE',
        `composite buildpack ${key} contains itself (${[...within, key].join(' → ')})`,
        { kind: 'invalid-order' },
      );
    const after = rest.slice(i + 1);
    const inner = [...within, key];
    for (const sub of d.order)
      yield* expandGroup(
        prefix,
        [...sub.group.map((child) => ({ el: child, within: inner })), ...after],
        lookup,
      );
    if (el.optional) yield* expandGroup(prefix, after, lookup);
    return;
  }
  yield prefix;
}
