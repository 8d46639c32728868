import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import { parseToml } from '../util/toml.js';
import { parseJson, parseWith } from '../util/validate.js';
import { type FarmNodeConfig, nodeFromInput, parseNodeUri } from './config.js';

/**
 * podman's farms and system connections, read so `packfarm farm import-podman` can build the same farm over
 * the same ssh URIs and identities (reference/oci-farm.md §1.2):
 *   - containers.conf `[engine.service_destinations.NAME]` (`uri`, `identity`) and `[farms]` (`default`,
 *     `[farms.list]` NAME = [connections]); files read in podman's order, later ones win:
 *     /usr/share/containers, /etc/containers, then $XDG_CONFIG_HOME/containers (or $CONTAINERS_CONF alone);
 *   - podman 5's podman-connections.json (`Connection.Connections`, `Farm.List`, each with `Default`), at
 *     $PODMAN_CONNECTIONS_CONF or beside the user's containers.conf; its entries win over containers.conf.
 */
export interface PodmanSetup {
  connections: Map<string, { uri: string; identity?: string }>;
  farms: Map<string, string[]>;
  defaultFarm?: string;
  /** The files that existed and were read. */
  sources: string[];
}

const DestinationToml = z.looseObject({ uri: z.string().min(1), identity: z.string().optional() });
const ContainersConfSchema = z.looseObject({
  engine: z
    .looseObject({ service_destinations: z.record(z.string(), DestinationToml).optional() })
    .optional(),
  farms: z
    .looseObject({
      default: z.string().optional(),
      list: z.record(z.string(), z.array(z.string())).optional(),
    })
    .optional(),
});

const ConnectionsJsonSchema = z.looseObject({
  Connection: z
    .looseObject({
      Default: z.string().optional(),
      Connections: z
        .record(z.string(), z.looseObject({ URI: z.string().min(1), Identity: z.string().optional() }))
        .optional(),
    })
    .optional(),
  Farm: z
    .looseObject({
      Default: z.string().optional(),
      List: z.record(z.string(), z.array(z.string())).optional(),
    })
    .optional(),
});

function userContainersDir(env: NodeJS.ProcessEnv): string {
  return join(env.XDG_CONFIG_HOME || join(env.HOME || homedir(), '.config'), 'containers');
}

export function containersConfPaths(env: NodeJS.ProcessEnv = process.env): string[] {
  if (env.CONTAINERS_CONF) return [env.CONTAINERS_CONF];
  return [
    '/usr/share/containers/containers.conf',
    '/etc/containers/containers.conf',
    join(userContainersDir(env), 'containers.conf'),
  ];
}

export function podmanConnectionsPath(env: NodeJS.ProcessEnv = process.env): string {
  return env.PODMAN_CONNECTIONS_CONF || join(userContainersDir(env), 'podman-connections.json');
}

async function readOptional(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw new PackfarmError('FILE_UNREADABLE', `${path}: ${(err as Error).message}`, { cause: err });
  }
}

export async function readPodmanSetup(env: NodeJS.ProcessEnv = process.env): Promise<PodmanSetup> {
  const setup: PodmanSetup = { connections: new Map(), farms: new Map(), sources: [] };
  for (const path of containersConfPaths(env)) {
    const text = await readOptional(path);
    if (text === undefined) continue;
    setup.sources.push(path);
    const conf = parseWith(ContainersConfSchema, parseToml(text, path), path, 'INVALID_PODMAN_CONFIG');
    for (const [name, d] of Object.entries(conf.engine?.service_destinations ?? {}))
      setup.connections.set(name, { uri: d.uri, ...(d.identity ? { identity: d.identity } : {}) });
    for (const [name, list] of Object.entries(conf.farms?.list ?? {})) setup.farms.set(name, list);
    if (conf.farms?.default) setup.defaultFarm = conf.farms.default;
  }
  const jsonPath = podmanConnectionsPath(env);
  const text = await readOptional(jsonPath);
  if (text !== undefined) {
    setup.sources.push(jsonPath);
    const doc = parseWith(
      ConnectionsJsonSchema,
      parseJson(text, jsonPath),
      jsonPath,
      'INVALID_PODMAN_CONFIG',
    );
    for (const [name, d] of Object.entries(doc.Connection?.Connections ?? {}))
      setup.connections.set(name, { uri: d.URI, ...(d.Identity ? { identity: d.Identity } : {}) });
    for (const [name, list] of Object.entries(doc.Farm?.List ?? {})) setup.farms.set(name, list);
    if (doc.Farm?.Default) setup.defaultFarm = doc.Farm.Default;
  }
  return setup;
}

export interface ImportedFarm {
  /** The podman farm imported, or undefined when podman had no farm and every connection was taken. */
  podmanFarm?: string;
  nodes: FarmNodeConfig[];
  /** Connections that are not ssh (unix://, tcp://), with why they were left out. */
  skipped: Array<{ name: string; reason: string }>;
}

/**
 * The nodes of podman farm `name` (default: podman's default farm; with no farm at all, every connection,
 * as `podman farm build` does). Each connection becomes a node of the same name over the same ssh URI
 * (podman's socket path dropped) and identity.
 */
export function importPodmanFarm(setup: PodmanSetup, name?: string): ImportedFarm {
  const where = setup.sources.join(', ') || 'no podman configuration file found';
  let podmanFarm = name ?? setup.defaultFarm;
  let names: string[];
  if (podmanFarm !== undefined) {
    const list = setup.farms.get(podmanFarm);
    if (!list)
      throw new PackfarmError('FARM_NOT_FOUND', `podman has no farm named "${podmanFarm}" (read: ${where})`, {
        hint:
          setup.farms.size > 0
            ? `podman farms: ${[...setup.farms.keys()].join(', ')}`
            : 'podman knows no farms; run without a name to import every system connection',
      });
    names = list;
  } else {
    podmanFarm = undefined;
    names = [...setup.connections.keys()].sort();
  }
  if (names.length === 0)
    throw new PackfarmError('NOTHING_TO_IMPORT', `no podman system connections to import (read: ${where})`, {
      hint: 'add one with `podman system connection add NAME ssh://user@host`',
    });
  const nodes: FarmNodeConfig[] = [];
  const skipped: ImportedFarm['skipped'] = [];
  for (const conn of names) {
    const d = setup.connections.get(conn);
    if (!d) {
      skipped.push({ name: conn, reason: 'the farm names it, but no such system connection exists' });
      continue;
    }
    if (!d.uri.startsWith('ssh://')) {
      skipped.push({ name: conn, reason: `${d.uri} is not an ssh:// connection` });
      continue;
    }
    const dest = parseNodeUri(d.uri, `podman connection ${conn}`);
    if (dest === 'local') continue;
    const host = dest.host.includes(':') ? `[${dest.host}]` : dest.host;
    const uri = `ssh://${dest.user ? `${encodeURIComponent(dest.user)}@` : ''}${host}${dest.port ? `:${dest.port}` : ''}`;
    nodes.push(nodeFromInput({ name: conn, uri, ...(d.identity ? { identity: d.identity } : {}) }));
  }
  return { ...(podmanFarm !== undefined ? { podmanFarm } : {}), nodes, skipped };
}
