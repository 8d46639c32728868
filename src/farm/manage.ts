import { realpathSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { isPackfarmError } from '../util/errors.js';
import { type NodeConnection, connectNode } from './client.js';
import { type FarmNodeConfig, getFarm, LOCAL_NODE, readFarms } from './config.js';
import type { NodeInfo } from './protocol.js';

export const PACKFARM_VERSION = '0.1.0';

/** How to start this very packfarm as a local node: node + bin/packfarm.js of this installation. */
export function localPackfarmCommand(): string[] {
  const bin = join(dirname(fileURLToPath(import.meta.url)), '..', '..', 'bin', 'packfarm.js');
  return [process.execPath, realpathSync(bin)];
}

/** The local node, as a farm entry (for builds without --farm, and farms that list "local"). */
export function localNode(): FarmNodeConfig {
  return { name: LOCAL_NODE, uri: LOCAL_NODE };
}

export interface NodeStatus {
  name: string;
  uri: string;
  identity?: string;
  platforms?: string[];
  maxJobs?: number;
  reachable: boolean;
  error?: { code: string; message: string; hint?: string };
  packfarm?: string;
  native?: string[];
  emulated?: string[];
  cpus?: number;
  /** Jobs the node accepts at once: the farm's max_jobs, else the node's own. */
  capacity?: number;
  runningJobs?: number;
}

export async function connectAll(
  nodes: readonly FarmNodeConfig[],
  env: NodeJS.ProcessEnv,
): Promise<Array<{ node: FarmNodeConfig; conn?: NodeConnection; error?: unknown }>> {
  return Promise.all(
    nodes.map(async (node) => {
      try {
        const conn = await connectNode(node, {
          version: PACKFARM_VERSION,
          localCommand: localPackfarmCommand,
          env,
        });
        return { node, conn };
      } catch (error) {
        return { node, error };
      }
    }),
  );
}

export function nodeStatus(node: FarmNodeConfig, conn?: NodeConnection, error?: unknown): NodeStatus {
  const base: NodeStatus = {
    name: node.name,
    uri: node.uri,
    ...(node.identity ? { identity: node.identity } : {}),
    ...(node.platforms ? { platforms: node.platforms } : {}),
    ...(node.max_jobs ? { maxJobs: node.max_jobs } : {}),
    reachable: conn !== undefined,
  };
  if (!conn) {
    const e = error as Error;
    return {
      ...base,
      error: {
        code: isPackfarmError(e) ? e.code : 'INTERNAL',
        message: e?.message ?? String(error),
        ...(isPackfarmError(e) && e.hint ? { hint: e.hint } : {}),
      },
    };
  }
  const info: NodeInfo = conn.info;
  return {
    ...base,
    packfarm: conn.packfarm,
    native: info.native,
    emulated: info.emulated,
    cpus: info.cpus,
    capacity: Math.min(node.max_jobs ?? info.maxJobs, info.maxJobs),
    runningJobs: info.runningJobs,
  };
}

export interface FarmListing {
  name: string;
  default: boolean;
  nodes: NodeStatus[];
}

/** Every farm (or one), each node probed in parallel (hello over its connection, then closed). */
export async function listFarms(opts: {
  path: string;
  env: NodeJS.ProcessEnv;
  name?: string;
}): Promise<FarmListing[]> {
  const file = await readFarms(opts.path);
  const names = opts.name ? [opts.name] : Object.keys(file.farms).sort();
  const out: FarmListing[] = [];
  for (const name of names) {
    const farm = getFarm(file, name, opts.path);
    const conns = await connectAll(farm.nodes, opts.env);
    const nodes = conns.map((c) => nodeStatus(c.node, c.conn, c.error));
    await Promise.all(conns.map((c) => c.conn?.close()));
    out.push({ name, default: file.default === name, nodes });
  }
  return out;
}
