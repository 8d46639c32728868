import { type Order, type OrderElement, orderFromToml } from '../buildpack/descriptor.js';
import { type OrderFile, readOrderFile, type SystemFile } from './files.js';

/**
 * The platform's order (platform.md "order.toml", "system.toml"): the groups of buildpacks detection tries,
 * as read from order.toml, with Platform API 0.15 system buildpacks merged in. Expansion of composites is
 * the buildpack contract's (buildpack/order.ts).
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
