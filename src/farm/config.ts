import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { z } from 'zod';
import { formatPlatform, parsePlatform } from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';
import { writeFileAtomic } from '../util/fs.js';
import { parseToml, stringifyToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';

/**
 * Farms: named sets of build nodes, kept in `<config dir>/farms.toml` (config dir: $XDG_CONFIG_HOME/packfarm,
 * else ~/.config/packfarm). A node is `local` (this machine, no SSH) or an `ssh://[user@]host[:port]` URI.
 *
 *   default = "arm"
 *   [farms.arm]
 *   [[farms.arm.nodes]]
 *   name = "pi"
 *   uri = "ssh://ci@pi.lan:2222"
 *   identity = "/home/me/.ssh/id_ed25519"   # optional; else ssh's own config and agent
 *   platforms = ["linux/arm64"]             # optional: use the node only for these
 *   max_jobs = 2                            # optional: at most this many targets at once
 *   command = "/opt/packfarm/bin/packfarm"  # optional: how to start packfarm there (default "packfarm")
 *   ssh_options = ["ConnectTimeout=5"]      # optional: extra `ssh -o` options
 */
export const LOCAL_NODE = 'local';

const NodeSchema = z.object({
  name: z.string().regex(/^[A-Za-z0-9@._:-]+$/, 'letters, digits and @ . _ : - only'),
  uri: z.string().min(1),
  identity: z.string().min(1).optional(),
  platforms: z.array(z.string().min(1)).optional(),
  max_jobs: z.number().int().positive().optional(),
  command: z.string().min(1).optional(),
  ssh_options: z.array(z.string().min(1)).optional(),
});
export type FarmNodeConfig = z.infer<typeof NodeSchema>;

const FarmSchema = z.object({ nodes: z.array(NodeSchema).default([]) });
export type FarmConfig = z.infer<typeof FarmSchema>;

const FarmsFileSchema = z.object({
  default: z.string().optional(),
  farms: z.record(z.string(), FarmSchema).default({}),
});
export type FarmsFile = z.infer<typeof FarmsFileSchema>;

const FARM_NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.XDG_CONFIG_HOME) return join(env.XDG_CONFIG_HOME, 'packfarm');
  return join(env.HOME || homedir(), '.config', 'packfarm');
}

export function farmsFilePath(env: NodeJS.ProcessEnv = process.env): string {
  return join(configDir(env), 'farms.toml');
}

export async function readFarms(path: string): Promise<FarmsFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return { farms: {} };
    throw new PackfarmError('FILE_UNREADABLE', `${path}: ${(err as Error).message}`, { cause: err });
  }
  const file = parseWith(FarmsFileSchema, parseToml(text, path), path, 'INVALID_FARM_CONFIG');
  for (const [name, farm] of Object.entries(file.farms))
    for (const [i, n] of farm.nodes.entries()) validateNode(n, `${path} farms.${name}.nodes[${i}]`);
  return file;
}

export async function writeFarms(path: string, file: FarmsFile): Promise<void> {
  const header = '# packfarm farms (see `packfarm farm --help`); rewritten by the farm commands\n';
  await writeFileAtomic(path, header + stringifyToml(file as unknown as Record<string, unknown>), 0o600);
}

/** Change the farms file in one read-modify-write (temp file, then rename). */
export async function updateFarms(path: string, change: (file: FarmsFile) => void): Promise<FarmsFile> {
  const file = await readFarms(path);
  change(file);
  await writeFarms(path, file);
  return file;
}

export function checkFarmName(name: string): string {
  if (!FARM_NAME_RE.test(name))
    throw new PackfarmError('INVALID_ARGS', `farm name "${name}": use letters, digits, '.', '_' and '-'`);
  return name;
}

export function getFarm(file: FarmsFile, name: string, path: string): FarmConfig {
  const farm = file.farms[name];
  if (!farm)
    throw new PackfarmError('FARM_NOT_FOUND', `no farm named "${name}" in ${path}`, {
      hint:
        Object.keys(file.farms).length > 0
          ? `farms: ${Object.keys(file.farms).join(', ')}`
          : 'create one with `packfarm farm create NAME`',
    });
  return farm;
}

/** An ssh destination parsed from `ssh://[user@]host[:port]` (a path, as podman URIs carry, is dropped). */
export interface SshDestination {
  user?: string;
  host: string;
  port?: number;
}

export function parseNodeUri(uri: string, source = 'node'): SshDestination | 'local' {
  if (uri === LOCAL_NODE) return 'local';
  let u: URL;
  try {
    u = new URL(uri);
  } catch {
    throw badUri(uri, source);
  }
  if (u.protocol !== 'ssh:' || !u.hostname) throw badUri(uri, source);
  const host = u.hostname.startsWith('[') ? u.hostname.slice(1, -1) : u.hostname;
  return {
    ...(u.username ? { user: decodeURIComponent(u.username) } : {}),
    host,
    ...(u.port ? { port: Number(u.port) } : {}),
  };
}

function badUri(uri: string, source: string): PackfarmError {
  return new PackfarmError(
    'INVALID_NODE_URI',
    `${source}: "${uri}" is not a node (expected ssh://[user@]host[:port] or "local")`,
  );
}

/** A default node name: user@host[:port] as written in the URI. */
export function defaultNodeName(uri: string): string {
  const d = parseNodeUri(uri);
  if (d === 'local') return LOCAL_NODE;
  const host = d.host.includes(':') ? `[${d.host}]` : d.host;
  return `${d.user ? `${d.user}@` : ''}${host}${d.port ? `:${d.port}` : ''}`;
}

export function validateNode(n: FarmNodeConfig, source: string): FarmNodeConfig {
  parseNodeUri(n.uri, `${source} uri`);
  if (n.platforms)
    n.platforms = n.platforms.map((p) => formatPlatform(parsePlatform(p, `${source} platforms`)));
  return n;
}

export interface NodeInput {
  uri: string;
  name?: string;
  identity?: string;
  platforms?: string[];
  maxJobs?: number;
  command?: string;
  sshOptions?: string[];
}

/** A node entry from CLI input: names defaulted, platforms normalized, the identity made absolute. */
export function nodeFromInput(input: NodeInput, cwd = process.cwd()): FarmNodeConfig {
  const n: FarmNodeConfig = {
    name: input.name ?? defaultNodeName(input.uri),
    uri: input.uri,
    ...(input.identity ? { identity: resolve(cwd, input.identity) } : {}),
    ...(input.platforms && input.platforms.length > 0 ? { platforms: input.platforms } : {}),
    ...(input.maxJobs !== undefined ? { max_jobs: input.maxJobs } : {}),
    ...(input.command ? { command: input.command } : {}),
    ...(input.sshOptions && input.sshOptions.length > 0 ? { ssh_options: input.sshOptions } : {}),
  };
  return validateNode(parseWith(NodeSchema, n, 'node', 'INVALID_ARGS'), `node ${n.name}`);
}

export function addNode(farm: FarmConfig, node: FarmNodeConfig, farmName: string): void {
  if (farm.nodes.some((n) => n.name === node.name))
    throw new PackfarmError('NODE_EXISTS', `farm ${farmName} already has a node named "${node.name}"`, {
      hint: 'remove it first (farm node rm) or give the new one another --name',
    });
  farm.nodes.push(node);
}

export function removeNode(farm: FarmConfig, name: string, farmName: string): void {
  const i = farm.nodes.findIndex((n) => n.name === name);
  if (i < 0)
    throw new PackfarmError('NODE_NOT_FOUND', `farm ${farmName} has no node named "${name}"`, {
      hint: `its nodes: ${farm.nodes.map((n) => n.name).join(', ') || '(none)'}`,
    });
  farm.nodes.splice(i, 1);
}
