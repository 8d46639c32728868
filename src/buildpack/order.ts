import { PackfarmError } from '../util/errors.js';
import { type OrderFile, readOrderFile, type SystemFile } from '../platform/files.js';
import { EXIT } from '../platform/exit-codes.js';
import {
  type BuildpackDescriptor,
  type Order,
  type OrderElement,
  isComposite,
  orderFromToml,
} from './descriptor.js';

/**
 * Orders (buildpack.md "Order Resolution", platform.md "order.toml"): which groups of buildpacks detection
 * tries, in which sequence, after composite buildpacks are expanded.
 */

export interface PlatformOrder {
  order: Order;
  /** `[[order-extensions]]`; packfarm does not run image extensions yet, the detector refuses a non-empty one. */
  orderExtensions: Order;
}

export function platformOrderFromFile(file: OrderFile): PlatformOrder {
  return {
    order: orderFromToml(file.order),
    orderExtensions: orderFromToml(file['order-extensions'] ?? []),
  };
}

/** Read and validate order.toml. */
export async function readOrder(path: string): Promise<PlatformOrder> {
  return platformOrderFromFile(await readOrderFile(path));
}

/**
 * Platform API 0.15 system buildpacks: `pre` ones are put in front of and `post` ones after every group,
 * each only when the group has no buildpack of that ID yet.
 */
export function mergeSystemBuildpacks(order: Order, system: SystemFile): Order {
  const pre = system.system.pre?.buildpacks ?? [];
  const post = system.system.post?.buildpacks ?? [];
  if (pre.length === 0 && post.length === 0) return order;
  const toElement = (b: { id: string; version: string; optional?: boolean | undefined }): OrderElement => ({
    id: b.id,
    version: b.version,
    optional: b.optional ?? false,
  });
  return order.map((g) => {
    const ids = new Set(g.group.map((e) => e.id));
    return {
      group: [
        ...pre.filter((b) => !ids.has(b.id)).map(toElement),
        ...g.group,
        ...post.filter((b) => !ids.has(b.id)).map(toElement),
      ],
    };
  });
}

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
        { exitCode: EXIT.DETECT_ERROR },
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
