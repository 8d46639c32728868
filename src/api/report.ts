import { spawn } from 'node:child_process';
import { stat } from 'node:fs/promises';
import { delimiter, join } from 'node:path';
import { SUPPORTED_BUILDPACK_APIS } from '../buildpack/api.js';
import { BINFMT_DIR, type BinfmtFs, readBinfmt } from '../exec/binfmt.js';
import { findRuntime } from '../exec/runtime.js';
import { SUPPORTED_PLATFORM_APIS } from '../platform/api.js';
import { packfarmDataDir } from '../image/data-dir.js';
import { formatPlatform, hostPlatform } from '../oci/platform.js';
import { credentialFiles, readDockerConfig } from '../registry/credentials.js';
import { dataDirUsage } from './prune.js';

/**
 * `packfarm report`: what a bug report needs, gathered without touching the network or printing secrets:
 * versions, supported APIs, the data dir and what it holds, the OCI runtime, the binfmt_misc handlers that run
 * another architecture's ELF binaries (exec/binfmt.ts decodes each one's magic, as the executors do),
 * and where credentials would come from (file names and the registries they name, never the credentials).
 */
export interface EnvironmentReport {
  packfarm: string;
  node: string;
  platform: string;
  apis: { platform: string[]; buildpack: string[] };
  dataDir: { path: string; bytes: Record<string, number> };
  runc: { path: string | null; version: string | null };
  binfmt: {
    /** Whether binfmt_misc is mounted. */
    available: boolean;
    /** Whether the facility itself is enabled (a disabled one runs no handler). */
    enabled: boolean;
    /** Every handler whose magic selects an ELF architecture, with that architecture (e.g. `linux/arm64`). */
    entries: Array<{ name: string; platform: string; enabled: boolean; interpreter: string; flags: string }>;
  };
  tools: Record<string, string | null>;
  credentials: Array<{ source: string; present: boolean; registries: string[]; helpers: string[] }>;
}

export async function environmentReport(opts: {
  version: string;
  env?: NodeJS.ProcessEnv;
  /** Where binfmt_misc is read (tests point it at a memfs copy). */
  binfmt?: { dir?: string; fs?: BinfmtFs };
}): Promise<EnvironmentReport> {
  const env = opts.env ?? process.env;
  const dataDir = packfarmDataDir(env);
  // The runtime builds run (the oci executor's own resolution), not merely the first runc on PATH.
  const runcPath = (await findRuntime(env)) ?? null;
  const tools: Record<string, string | null> = {};
  for (const t of ['podman', 'skopeo', 'umoci']) {
    const p = await which(t, env);
    tools[t] = p ? ((await firstLine(p, ['--version'])) ?? p) : null;
  }
  return {
    packfarm: opts.version,
    node: process.version,
    platform: formatPlatform(hostPlatform()),
    apis: { platform: [...SUPPORTED_PLATFORM_APIS], buildpack: [...SUPPORTED_BUILDPACK_APIS] },
    dataDir: { path: dataDir, bytes: await dataDirUsage(dataDir) },
    runc: { path: runcPath, version: runcPath ? await firstLine(runcPath, ['--version']) : null },
    binfmt: await binfmtHandlers(opts.binfmt),
    tools,
    credentials: await credentialSources(env),
  };
}

async function credentialSources(env: NodeJS.ProcessEnv): Promise<EnvironmentReport['credentials']> {
  const out: EnvironmentReport['credentials'] = [];
  if (env.CNB_REGISTRY_AUTH) {
    let registries: string[] = [];
    try {
      registries = Object.keys(JSON.parse(env.CNB_REGISTRY_AUTH) as Record<string, unknown>);
    } catch {
      registries = ['(not valid JSON)'];
    }
    out.push({ source: 'CNB_REGISTRY_AUTH', present: true, registries, helpers: [] });
  }
  for (const path of credentialFiles(env)) {
    const config = await readDockerConfig(path).catch(() => undefined);
    out.push({
      source: path,
      present: config !== undefined,
      registries: Object.keys(config?.auths ?? {}),
      helpers: [
        ...Object.entries(config?.credHelpers ?? {}).map(([r, h]) => `${r}: ${h}`),
        ...(config?.credsStore ? [`(default): ${config.credsStore}`] : []),
      ],
    });
  }
  return out;
}

async function binfmtHandlers(
  opts: { dir?: string; fs?: BinfmtFs } = {},
): Promise<EnvironmentReport['binfmt']> {
  const state = await readBinfmt(opts.dir ?? BINFMT_DIR, opts.fs);
  return {
    available: state.mounted,
    enabled: state.enabled,
    entries: state.entries.flatMap(({ name, platform, enabled, interpreter, flags }) =>
      platform ? [{ name, platform: formatPlatform(platform), enabled, interpreter, flags }] : [],
    ),
  };
}

async function isFile(p: string): Promise<boolean> {
  return (await stat(p).catch(() => undefined))?.isFile() ?? false;
}

async function which(bin: string, env: NodeJS.ProcessEnv): Promise<string | undefined> {
  for (const d of (env.PATH ?? '').split(delimiter)) {
    if (d && (await isFile(join(d, bin)))) return join(d, bin);
  }
  return undefined;
}

/** The first line a tool prints for `args` (bounded to 5 s), or null. */
function firstLine(bin: string, args: string[]): Promise<string | null> {
  return new Promise((resolve) => {
    const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'ignore'] });
    let out = '';
    const timer = setTimeout(() => child.kill('SIGKILL'), 5000);
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out += d;
    });
    child.on('error', () => {
      clearTimeout(timer);
      resolve(null);
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve(code === 0 ? (out.split('\n')[0]?.trim() ?? null) : null);
    });
  });
}
