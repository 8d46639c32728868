import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';
import { createReadStream } from 'node:fs';
import { mkdir, readdir, utimes } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { extractLayer } from '../archive/extract.js';
import { parsePlatform } from '../oci/platform.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import type { BuildEvent } from '../api/events.js';
import { parseJson, parseWith } from '../util/validate.js';
import { createKeychain } from '../registry/credentials.js';
import { explainCredentialError } from './credentials.js';
import { type JobTokens, createJobTokens } from './job-tokens.js';
import {
  jobCacheCommitted,
  materializeImage,
  materializeInputs,
  useCoordinatorNames,
} from './node-inputs.js';
import { ErrorBodySchema, type JobCredential, JobCredentialSchema, TargetJobSchema } from './protocol.js';

/**
 * One target's build on a node, in its own process (`packfarm node run-job`), started by `node serve` in a
 * process group of its own: cancelling kills the group (this process and every buildpack process) at once.
 *
 * Input (stdin, JSON lines): first the job, where the cached blobs are, and the registry credentials; then,
 * while it runs, `token` lines answering its `token-request`s (renewed scoped tokens, job-tokens.ts). `node
 * serve` keeps the pipe open until the job exits. Credentials live in this process's memory only: the build's
 * registry clients read them from there (and CNB_REGISTRY_AUTH in this process's environment follows them),
 * never written to disk, and the environment the build hands to buildpacks is a copy taken before, without
 * them. Buildpack processes never get this stdin (the executors give them their own).
 * Output (stdout): JSON lines, `event` / `log` / `token-request` while running, then one `result` or `error`.
 */
export const WorkerInputSchema = z.object({
  job: z.string(),
  node: z.string(),
  target: z.string(),
  spec: TargetJobSchema,
  jobDir: z.string(),
  dataDir: z.string(),
  /** digest → path of the blob in the node's cache. */
  blobs: z.record(z.string(), z.string()),
  credentials: z.array(JobCredentialSchema),
});
export type WorkerInput = z.infer<typeof WorkerInputSchema>;

/** Later stdin lines: the coordinator's answer to a `token-request` (relayed by `node serve`). */
export const WorkerTokenSchema = z.object({
  type: z.literal('token'),
  id: z.string(),
  credential: JobCredentialSchema.optional(),
  error: ErrorBodySchema.optional(),
});
export type WorkerToken = z.infer<typeof WorkerTokenSchema>;

export const WorkerOutputSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('event'),
    phase: z.string().optional(),
    event: z.record(z.string(), z.unknown()),
  }),
  z.object({ type: z.literal('log'), level: z.string(), message: z.string() }),
  /** Ask the coordinator (through `node serve`) for a fresh token for `registry`; answered on stdin. */
  z.object({ type: z.literal('token-request'), id: z.string(), registry: z.string() }),
  z.object({
    type: z.literal('result'),
    digest: z.string(),
    size: z.number(),
    mediaType: z.string(),
    report: z.record(z.string(), z.unknown()),
    /** oci output: the node-side layout holding the image, whose blobs go back to the coordinator. */
    layout: z.string().optional(),
    /** --cache-dir: the committed dir of the cache the build wrote, sent back to the coordinator. */
    cacheCommitted: z.string().optional(),
  }),
  z.object({
    type: z.literal('error'),
    error: z.object({
      code: z.string(),
      message: z.string(),
      hint: z.string().optional(),
      phase: z.string().optional(),
      nodeFault: z.boolean().optional(),
    }),
  }),
]);
export type WorkerOutput = z.infer<typeof WorkerOutputSchema>;

/** CNB_REGISTRY_AUTH's shape: registry → Authorization header value. */
export function registryAuthEnv(creds: readonly JobCredential[]): string | undefined {
  const out: Record<string, string> = {};
  for (const c of creds) {
    if (c.registryToken) out[c.registry] = `Bearer ${c.registryToken}`;
    else if (c.username !== undefined && c.password !== undefined)
      out[c.registry] = `Basic ${Buffer.from(`${c.username}:${c.password}`).toString('base64')}`;
  }
  return Object.keys(out).length > 0 ? JSON.stringify(out) : undefined;
}

/** Where a node keeps the oci-output image of one coordinator layout and platform (stable: layers reuse). */
export function nodeLayoutDir(dataDir: string, key: string, platform: string): string {
  const h = createHash('sha256').update(`${key}\n${platform}`).digest('hex').slice(0, 16);
  return join(dataDir, 'farm', 'oci', h);
}

export async function runWorker(
  stdin: NodeJS.ReadableStream,
  emit: (m: WorkerOutput) => void,
  env: NodeJS.ProcessEnv = process.env,
  signal?: AbortSignal,
): Promise<number> {
  let phase: string | undefined = 'setup';
  let credentials: JobCredential[] = [];
  let tokens: JobTokens | undefined;
  const lines = createInterface({ input: stdin, crlfDelay: Number.POSITIVE_INFINITY });
  try {
    const first = await readJobInput(lines, (t) => tokens?.answer(t.id, t));
    const input = parseWith(WorkerInputSchema, parseJson(first, 'job input'), 'job input', 'PROTOCOL_ERROR');
    // The build's (and buildpacks') environment: taken before the credentials go into process.env.
    credentials = input.credentials;
    const buildEnv: NodeJS.ProcessEnv = { ...env };
    delete buildEnv.CNB_REGISTRY_AUTH;
    const setAuthEnv = (creds: readonly JobCredential[]) => {
      const auth = registryAuthEnv(creds);
      if (auth) process.env.CNB_REGISTRY_AUTH = auth;
      else delete process.env.CNB_REGISTRY_AUTH;
    };
    setAuthEnv(input.credentials);
    // Scoped tokens are renewed before they expire (and on a 401), by asking the coordinator.
    const target = input.target;
    tokens = createJobTokens(input.credentials, {
      request: (id, registry) => emit({ type: 'token-request', id, registry }),
      onChange: (creds, c) => {
        credentials = creds;
        setAuthEnv(creds);
        emit({
          type: 'event',
          ...(phase ? { phase } : {}),
          event: {
            type: 'debug',
            target,
            phase,
            message: `${c.registry}: registry token renewed (${(c.scopes ?? []).join(' ')}), valid until ${new Date(c.expiresAt ?? 0).toISOString()}`,
          },
        });
      },
      log: (message) =>
        emit({
          type: 'event',
          ...(phase ? { phase } : {}),
          event: { type: 'warning', target, phase, message },
        }),
    });
    const registryCredentials = tokens.resolver(createKeychain({ env: buildEnv }));

    const { spec } = input;
    // Without a creation time from the coordinator, the default (1980) applies on every node alike.
    delete buildEnv.SOURCE_DATE_EPOCH;
    const blob = (d: string) => {
      const p = input.blobs[d];
      if (!p) throw new PackfarmError('BLOB_MISSING', `job ${input.job}: blob ${d} was not received`);
      return p;
    };
    const appDir = join(input.jobDir, 'app');
    await mkdir(appDir, { recursive: true });
    await extractLayer({ source: createReadStream(blob(spec.app.digest)), dest: appDir, name: 'app source' });
    // The app tar stamps every file with the same fixed mtime (so its digest only follows the content), and
    // the build syncs the workspace by size, mode and mtime: a file changed to the same size would look
    // unchanged. Fresh mtimes make the sync copy every file — correct, at the cost of one local copy.
    const now = new Date();
    for (const e of await readdir(appDir, { recursive: true, withFileTypes: true }))
      if (e.isFile()) await utimes(join(e.parentPath, e.name), now, now);
    const buildpacks: string[] = [];
    for (const b of spec.buildpacks)
      buildpacks.push(
        'ref' in b
          ? b.ref
          : 'package' in b
            ? // A buildpackage only the coordinator has: laid out here once, read as `oci:` like any other.
              await materializeImage(input.dataDir, b.package, blob)
            : blob(b.digest),
      );
    // project.toml's local buildpackages: the coordinator's paths stay in the file; the node reads its layouts.
    const projectUris = new Map<string, string>();
    for (const b of spec.projectBuildpacks ?? [])
      projectUris.set(b.uri, await materializeImage(input.dataDir, b.package, blob));
    const platform = parsePlatform(spec.platform, 'job platform');
    // Images, a builder dir and a cache that only the coordinator has arrived as blobs: lay them out.
    const local = await materializeInputs(
      spec,
      { dataDir: input.dataDir, jobDir: input.jobDir, platform },
      blob,
    );
    const builder = local.builder ?? spec.builder;
    const runImage = local.runImage ?? spec.runImage;
    const buildImage = local.buildImage ?? spec.buildImage;

    let image: string;
    let layout: string | undefined;
    if (spec.output.kind === 'registry') image = spec.output.image;
    else {
      layout = nodeLayoutDir(input.dataDir, spec.output.key, spec.platform);
      image = `oci:${layout}:target`;
    }
    const [{ planBuild }, { runTarget }] = await Promise.all([
      import('../api/plan.js'),
      import('../api/run-target.js'),
    ]);
    const onEvent = (e: BuildEvent) => {
      phase = e.phase;
      emit({ type: 'event', phase: e.phase, event: e as unknown as Record<string, unknown> });
    };
    phase = 'plan';
    const plan = await planBuild(
      {
        image,
        path: appDir,
        buildpacks,
        ...(builder ? { builder } : {}),
        ...(runImage ? { runImage } : {}),
        ...(buildImage ? { buildImage } : {}),
        ...(local.cacheDir ? { cacheDir: local.cacheDir } : {}),
        ...(spec.executor ? { executor: spec.executor } : {}),
        ...(spec.network ? { network: spec.network } : {}),
        env: spec.env,
        publish: spec.output.kind === 'registry',
        insecureRegistries: spec.insecureRegistries,
        ...(spec.cacheImage ? { cacheImage: spec.cacheImage } : {}),
        clearCache: spec.clearCache,
        ...(spec.previousImage ? { previousImage: spec.previousImage } : {}),
        ...(spec.creationTime ? { creationTime: spec.creationTime } : {}),
        ...(spec.defaultProcess ? { defaultProcess: spec.defaultProcess } : {}),
        ...(spec.descriptor ? { descriptor: join(appDir, spec.descriptor) } : {}),
        platforms: [spec.platform],
        platformApi: spec.platformApi,
        jobs: 1,
      },
      {
        env: buildEnv,
        onEvent,
        credentials: registryCredentials,
        ...(projectUris.size > 0 ? { projectBuildpackUris: projectUris } : {}),
      },
    );
    try {
      const target = plan.targets[0];
      if (!target) throw new Error('planBuild gave no target');
      // A registry target of an index goes by digest only; the coordinator tags the index. An oci target keeps
      // a tag in the node's own layout, so the next build there finds its previous image.
      if (spec.output.kind === 'registry') plan.index = spec.untagged;
      useCoordinatorNames(plan, spec);
      // Cancelling aborts the build: the executor stops the buildpack processes (each in its own group).
      const report = await runTarget(plan, target, { onEvent, ...(signal ? { signal } : {}) });
      emit({
        type: 'result',
        digest: report.digest,
        size: report.manifestSize,
        mediaType: report.mediaType,
        report: report as unknown as Record<string, unknown>,
        ...(layout ? { layout } : {}),
        ...(local.cacheDir ? { cacheCommitted: jobCacheCommitted(local.cacheDir, platform) } : {}),
      });
    } finally {
      await plan.cleanup();
    }
    return 0;
  } catch (caught) {
    // A refused or expired scoped token says so, rather than "log in again" (there is no login on a node).
    const err = explainCredentialError(caught, tokens?.current() ?? credentials);
    const e = err as Error;
    emit({
      type: 'error',
      error: {
        code: isPackfarmError(err) ? err.code : 'INTERNAL',
        message: e?.message ?? String(err),
        ...(isPackfarmError(err) && err.hint ? { hint: err.hint } : {}),
        ...(phase ? { phase } : {}),
        ...(isNodeFault(err) ? { nodeFault: true } : {}),
      },
    });
    return 1;
  } finally {
    tokens?.close();
    lines.close();
  }
}

/** The first stdin line (the job); later lines are token answers, handed to `onToken`. */
function readJobInput(
  lines: ReturnType<typeof createInterface>,
  onToken: (t: WorkerToken) => void,
): Promise<string> {
  return new Promise((resolve, reject) => {
    let first: string | undefined;
    lines.on('line', (line) => {
      if (first === undefined) {
        first = line;
        resolve(line);
        return;
      }
      if (line.trim() === '') return;
      try {
        onToken(
          parseWith(WorkerTokenSchema, parseJson(line, 'token answer'), 'token answer', 'PROTOCOL_ERROR'),
        );
      } catch {
        // A garbled answer is no token: the job keeps its current one (and says so when it expires).
      }
    });
    lines.on('close', () => {
      if (first === undefined)
        reject(new PackfarmError('PROTOCOL_ERROR', 'job input: stdin ended before the job arrived'));
    });
  });
}

const NODE_FAULT_ERRNOS = new Set(['ENOSPC', 'EDQUOT', 'EIO', 'EROFS', 'ENOMEM']);

/** Errors of the machine rather than of the build: worth retrying on another node. */
export function isNodeFault(err: unknown): boolean {
  for (
    let e = err as { code?: unknown; cause?: unknown } | undefined, i = 0;
    e && i < 5;
    e = e.cause as typeof e, i++
  )
    if (typeof e.code === 'string' && NODE_FAULT_ERRNOS.has(e.code)) return true;
  return /\bENOSPC\b|no space left on device/i.test(String((err as Error)?.message));
}

/**
 * A job process whose `node serve` died (killed, or its ssh session dropped hard) has no one to report to:
 * it calls `onGone` (which aborts the build, so the executor stops the buildpack processes), and kills its
 * own process group a few seconds later in case that did not end it.
 */
export function watchParent(onGone: () => void, intervalMs = 500, graceMs = 5000): void {
  const parent = process.ppid;
  const t = setInterval(() => {
    if (process.ppid === parent) return;
    clearInterval(t);
    onGone();
    setTimeout(() => {
      try {
        process.kill(-process.pid, 'SIGKILL');
      } catch {
        process.exit(1);
      }
    }, graceMs).unref();
  }, intervalMs);
  t.unref();
}
