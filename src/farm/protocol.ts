import type { Readable, Writable } from 'node:stream';
import { z } from 'zod';
import { type Digest, digestHex, isDigest } from '../oci/digest.js';
import { PackfarmError } from '../util/errors.js';
import { parseWith } from '../util/validate.js';

/**
 * The node protocol (spec/node-protocol.md): frames over a byte stream (the stdin/stdout of
 * `packfarm node serve --stdio`, usually carried by ssh).
 *
 *   frame = u32 big-endian length of (kind + payload) | u8 kind | payload
 *   kind 1: one JSON control message (UTF-8), validated with zod on receipt
 *   kind 2: a blob chunk: 32 raw bytes of the blob's sha256, then data; no data ends that blob
 *
 * Blob chunks carry their digest so several blobs (of several jobs) can interleave on one connection.
 */
/**
 * 2: credentials carry scoped tokens with their expiry; the app travels as pieces (`app.index`).
 * 3: images, a builder dir and a --cache-dir that exist only on the coordinator travel as blobs.
 * 4: a job renews its scoped tokens (`token-request` from the node, `token` from the coordinator).
 * See spec/node-protocol.md, "Versions".
 */
export const PROTOCOL_VERSION = 4;

export const FRAME_JSON = 1;
export const FRAME_BLOB = 2;
/** Largest frame accepted (kind + payload). Blob data is cut into chunks well below it. */
export const MAX_FRAME_BYTES = 4 * 1024 * 1024;
export const BLOB_CHUNK_BYTES = 256 * 1024;

const DigestSchema = z.string().refine(isDigest, 'expected sha256:<64 hex>') as unknown as z.ZodType<Digest>;
const PlatformText = z.string().min(1);

export const NodeInfoSchema = z.object({
  /** os/arch[/variant] the node's CPU runs. */
  native: z.array(PlatformText),
  /** Platforms it runs through binfmt_misc (qemu-user). */
  emulated: z.array(PlatformText),
  cpus: z.number().int().positive(),
  maxJobs: z.number().int().positive(),
  runningJobs: z.number().int().nonnegative(),
  hostname: z.string(),
});
export type NodeInfo = z.infer<typeof NodeInfoSchema>;

/**
 * A registry credential for one registry host: a token scoped by the coordinator to the job's repositories
 * (bearer-token registries), or a username and password (Basic-only registries: not scopable).
 */
export const JobCredentialSchema = z.object({
  registry: z.string().min(1),
  username: z.string().optional(),
  password: z.string().optional(),
  identityToken: z.string().optional(),
  registryToken: z.string().optional(),
  /** A token the coordinator obtained for this job: when it expires (ms since the epoch, coordinator clock). */
  expiresAt: z.number().int().optional(),
  /** … and the scopes it was asked for (`repository:NAME:pull,push`). */
  scopes: z.array(z.string()).optional(),
  /** … and when it was issued (coordinator clock): `expiresAt - issuedAt` is its lifetime (protocol 4). */
  issuedAt: z.number().int().optional(),
});
export type JobCredential = z.infer<typeof JobCredentialSchema>;

const BlobRefSchema = z.object({ digest: DigestSchema, size: z.number().int().nonnegative() });

/**
 * An image that exists only on the coordinator (an `oci:` layout, or the default builder it made), narrowed to
 * the target's platform: its image manifest, config and layers all travel as blobs. The node lays them out as
 * an OCI layout of its own and builds with that, recording `name` (the coordinator's reference) in labels.
 */
export const LocalImageSchema = z.object({
  /** builder: the builder image; build: the build image; run: the run image; buildpackage: a `--buildpack`. */
  role: z.enum(['builder', 'build', 'run', 'buildpackage']),
  /** The reference on the coordinator, as planning named it (labels, report). */
  name: z.string().min(1),
  manifest: z.object({ digest: DigestSchema, size: z.number().int().nonnegative(), mediaType: z.string() }),
  config: BlobRefSchema,
  layers: z.array(BlobRefSchema),
});
export type LocalImage = z.infer<typeof LocalImageSchema>;

/** A dir cache's committed state for one platform: its metadata (JSON text) and its layer tars (diffID = digest). */
export const DirCacheStateSchema = z.object({
  metadata: z.string().max(1024 * 1024),
  layers: z.array(BlobRefSchema),
});
export type DirCacheState = z.infer<typeof DirCacheStateSchema>;

/**
 * What a node needs to build one target: the build options of the coordinator's plan narrowed to that target,
 * with everything that lived on the coordinator's disk (the app, `--buildpack` dirs and archives) replaced by
 * blobs sent ahead with have/want. The node plans and runs the target itself (planBuild + runTarget).
 */
export const TargetJobSchema = z.object({
  /** The target platform, os/arch[/variant]. */
  platform: PlatformText,
  /** A tar of the app directory (blob)… */
  app: z.object({
    digest: DigestSchema,
    size: z.number().int().nonnegative(),
    /** … which, when the node lacks it, it rebuilds from the pieces this index names (app-pieces.ts). */
    index: z.object({ digest: DigestSchema, size: z.number().int().nonnegative() }).optional(),
  }),
  /**
   * `--buildpack` values: a blob (a tar of a buildpack dir, or the archive as given), a builder ID@VERSION, or
   * (protocol 4) a buildpackage only the coordinator has (`oci:DIR[:TAG]`, a `.cnb` file): its image for the
   * target's platform, sent as blobs like `images`; `name` is what the user gave.
   */
  buildpacks: z.array(
    z.union([
      z.object({ digest: DigestSchema, size: z.number().int().nonnegative(), name: z.string() }),
      z.object({ ref: z.string().min(1) }),
      z.object({ package: LocalImageSchema, name: z.string() }),
    ]),
  ),
  /** Registry references only: nodes pull them themselves. */
  builder: z.string().min(1).optional(),
  runImage: z.string().min(1).optional(),
  buildImage: z.string().min(1).optional(),
  executor: z.enum(['host', 'oci']).optional(),
  /** The buildpacks' network on the node (oci executor: host or none). */
  network: z.enum(['host', 'none']).optional(),
  /** registry: push the per-arch image by digest to this repository; oci: stream its blobs back. */
  output: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('registry'), image: z.string().min(1) }),
    /** `key` names the coordinator's layout, so the node keeps one image per layout and platform. */
    z.object({ kind: z.literal('oci'), key: z.string().min(1) }),
  ]),
  /** By digest only (several targets: the coordinator publishes the index and the tags). */
  untagged: z.boolean(),
  /** NAME=VALUE, already resolved on the coordinator (project.toml, env files, flags). */
  env: z.array(z.string()),
  insecureRegistries: z.array(z.string()),
  /** The creation time the coordinator resolved (unix seconds), so every node stamps the same time. */
  creationTime: z.string().min(1).optional(),
  defaultProcess: z.string().min(1).optional(),
  cacheImage: z.string().min(1).optional(),
  previousImage: z.string().min(1).optional(),
  clearCache: z.boolean(),
  /** project.toml relative to the app dir, when not the default. */
  descriptor: z.string().min(1).optional(),
  platformApi: z.string().min(1),
  /** Images only the coordinator has (protocol 3): the node uses them instead of `builder`/`buildImage`/`runImage`. */
  images: z.array(LocalImageSchema).optional(),
  /**
   * A builder directory of the coordinator (builder.toml, or a /cnb-like dir), resolved there and sent as a
   * tar of a /cnb-like dir (order.toml, run.toml, buildpacks/); `name` is what the user named.
   */
  builderDir: z
    .object({ digest: DigestSchema, size: z.number().int().nonnegative(), name: z.string() })
    .optional(),
  /** --cache-dir: the coordinator's cache for this platform (layers sent as blobs); the new one comes back. */
  cacheDir: DirCacheStateSchema.optional(),
  /**
   * Buildpackages on the coordinator's disk named in project.toml (protocol 4): per `uri` as written there,
   * its image for the target's platform (blobs); the node builds with its own layout in that uri's place.
   */
  projectBuildpacks: z.array(z.object({ uri: z.string().min(1), package: LocalImageSchema })).optional(),
});
export type TargetJob = z.infer<typeof TargetJobSchema>;

const JobId = z.string().min(1).max(200);

export const ErrorBodySchema = z.object({
  code: z.string().min(1),
  message: z.string(),
  hint: z.string().optional(),
  /** The build phase (or `transfer`, `setup`) the error happened in. */
  phase: z.string().optional(),
  /**
   * The node failed, not the build (its job process died, its disk is full, a blob went missing): the
   * coordinator may retry the target on another node. A buildpack failing is not a node fault.
   */
  nodeFault: z.boolean().optional(),
});
export type ErrorBody = z.infer<typeof ErrorBodySchema>;

/** coordinator → node */
export const ToNodeSchema = z.discriminatedUnion('type', [
  z.object({ type: z.literal('hello'), protocol: z.number().int(), packfarm: z.string() }),
  /** Which of these blobs do you lack? (answered by `want` with the same id) */
  z.object({ type: z.literal('have'), id: z.string(), digests: z.array(DigestSchema) }),
  /** Answer to the node's `have`: send these. */
  z.object({ type: z.literal('want'), id: z.string(), digests: z.array(DigestSchema) }),
  z.object({
    type: z.literal('run-target'),
    job: JobId,
    /** The farm's name for this node, echoed in events. */
    node: z.string(),
    target: z.string(),
    spec: TargetJobSchema,
    credentials: z.array(JobCredentialSchema),
  }),
  z.object({ type: z.literal('cancel'), job: JobId }),
  /**
   * Answer to the node's `token-request` (same `job` and `id`): a fresh token for the same registry and the
   * same scopes as the job's, or why there is none.
   */
  z
    .object({
      type: z.literal('token'),
      job: JobId,
      id: z.string().min(1).max(100),
      credential: JobCredentialSchema.optional(),
      error: ErrorBodySchema.optional(),
    })
    .refine((m) => (m.credential === undefined) !== (m.error === undefined), {
      message: 'expected exactly one of credential and error',
    }),
]);
export type ToNode = z.infer<typeof ToNodeSchema>;

export const JobResultSchema = z.object({
  digest: DigestSchema,
  size: z.number().int().nonnegative(),
  mediaType: z.string(),
  /** The per-target build report (api BuildReport shape), kept opaque here. */
  report: z.record(z.string(), z.unknown()),
  /** --cache-dir: the cache the build committed (its new layers were offered with `have` kind `cache` first). */
  cache: DirCacheStateSchema.optional(),
});
export type JobResult = z.infer<typeof JobResultSchema>;

/** node → coordinator */
export const FromNodeSchema = z.discriminatedUnion('type', [
  z.object({
    type: z.literal('hello'),
    protocol: z.number().int(),
    packfarm: z.string(),
    node: NodeInfoSchema,
  }),
  z.object({ type: z.literal('want'), id: z.string(), digests: z.array(DigestSchema) }),
  /** oci output: blobs of a job's image (kind `image`, the default) or its new cache (kind `cache`). */
  z.object({
    type: z.literal('have'),
    id: z.string(),
    job: JobId,
    digests: z.array(DigestSchema),
    kind: z.enum(['image', 'cache']).optional(),
  }),
  z.object({
    type: z.literal('event'),
    job: JobId,
    node: z.string(),
    target: z.string(),
    phase: z.string().optional(),
    event: z.record(z.string(), z.unknown()),
  }),
  z.object({ type: z.literal('result'), job: JobId, result: JobResultSchema }),
  z.object({ type: z.literal('error'), job: JobId.optional(), error: ErrorBodySchema }),
  /** A running job's scoped token for `registry` is about to expire (or was refused): ask for a fresh one. */
  z.object({
    type: z.literal('token-request'),
    job: JobId,
    id: z.string().min(1).max(100),
    registry: z.string().min(1),
  }),
]);
export type FromNode = z.infer<typeof FromNodeSchema>;

export type Frame = { kind: 'json'; value: unknown; bytes: number } | BlobChunk;
export interface BlobChunk {
  kind: 'blob';
  digest: Digest;
  /** Empty: the blob is complete. */
  data: Buffer;
}

function protocolError(message: string, hint?: string): PackfarmError {
  return new PackfarmError('PROTOCOL_ERROR', message, hint ? { hint } : {});
}

/** Encode one JSON control message as a frame. */
export function encodeMessage(message: unknown): Buffer {
  const body = Buffer.from(JSON.stringify(message), 'utf8');
  if (body.length + 1 > MAX_FRAME_BYTES)
    throw new Error(`control message of ${body.length} bytes is too large`);
  const out = Buffer.allocUnsafe(5 + body.length);
  out.writeUInt32BE(body.length + 1, 0);
  out.writeUInt8(FRAME_JSON, 4);
  body.copy(out, 5);
  return out;
}

/** Encode one blob chunk (empty `data` ends the blob). */
export function encodeBlobChunk(digest: Digest, data: Uint8Array): Buffer {
  if (data.length + 33 > MAX_FRAME_BYTES) throw new Error(`blob chunk of ${data.length} bytes is too large`);
  const out = Buffer.allocUnsafe(5 + 32 + data.length);
  out.writeUInt32BE(1 + 32 + data.length, 0);
  out.writeUInt8(FRAME_BLOB, 4);
  Buffer.from(digestHex(digest), 'hex').copy(out, 5);
  Buffer.from(data.buffer, data.byteOffset, data.length).copy(out, 37);
  return out;
}

/**
 * Cuts a byte stream into frames, whatever the chunking (a frame split over many chunks, many frames in one).
 * `push` throws a PROTOCOL_ERROR on a bad frame; after that the stream is unusable.
 */
export interface FrameDecoder {
  push(chunk: Buffer): Frame[];
  /** Throws when the stream ended inside a frame. */
  end(): void;
  /** Bytes buffered but not yet a whole frame. */
  readonly pending: number;
}

export function createFrameDecoder(source = 'node protocol'): FrameDecoder {
  let buf: Buffer = Buffer.alloc(0);
  const decoder: FrameDecoder = {
    push(chunk) {
      buf = buf.length === 0 ? chunk : Buffer.concat([buf, chunk]);
      const frames: Frame[] = [];
      while (buf.length >= 4) {
        const len = buf.readUInt32BE(0);
        if (len < 1 || len > MAX_FRAME_BYTES)
          throw protocolError(
            `${source}: bad frame length ${len} (expected 1 to ${MAX_FRAME_BYTES})`,
            'the other side is not speaking the packfarm node protocol (is something printing to stdout, e.g. a login banner in a shell rc file?)',
          );
        if (buf.length < 4 + len) break;
        const kind = buf.readUInt8(4);
        const payload = buf.subarray(5, 4 + len);
        buf = buf.subarray(4 + len);
        if (kind === FRAME_JSON) {
          let value: unknown;
          try {
            value = JSON.parse(payload.toString('utf8'));
          } catch {
            throw protocolError(`${source}: a control frame is not valid JSON`);
          }
          frames.push({ kind: 'json', value, bytes: len + 4 });
        } else if (kind === FRAME_BLOB) {
          if (payload.length < 32) throw protocolError(`${source}: a blob frame is shorter than its digest`);
          frames.push({
            kind: 'blob',
            digest: `sha256:${payload.subarray(0, 32).toString('hex')}`,
            // Copy: the receive buffer is reused, while a blob chunk may sit in a write queue.
            data: Buffer.from(payload.subarray(32)),
          });
        } else {
          throw protocolError(`${source}: unknown frame kind ${kind}`);
        }
      }
      return frames;
    },
    end() {
      if (buf.length > 0)
        throw protocolError(`${source}: the stream ended inside a frame (${buf.length} bytes left over)`);
    },
    get pending() {
      return buf.length;
    },
  };
  return decoder;
}

/** Validate a received control message (coordinator side: what the node sent). */
export function parseFromNode(value: unknown, source: string): FromNode {
  return parseWith(FromNodeSchema, value, source, 'PROTOCOL_ERROR');
}

/** Validate a received control message (node side: what the coordinator sent). */
export function parseToNode(value: unknown, source: string): ToNode {
  return parseWith(ToNodeSchema, value, source, 'PROTOCOL_ERROR');
}

/**
 * One side of a connection: writes frames with backpressure, reads frames and hands them out. `onFrame`
 * handlers run in arrival order; a handler's promise is not awaited (blob sinks queue their own writes).
 */
export interface Channel {
  send(message: ToNode | FromNode): Promise<void>;
  /** Stream one blob as chunks; resolves once every chunk is handed to the stream. Returns bytes sent. */
  sendBlob(digest: Digest, data: Readable): Promise<number>;
  /** Bytes written/read so far, frames included. */
  readonly bytesOut: number;
  readonly bytesIn: number;
  close(): void;
}

export interface ChannelOptions {
  input: Readable;
  output: Writable;
  source: string;
  onFrame: (frame: Frame) => void;
  /** The input ended (cleanly or not) or a bad frame arrived; called once. */
  onClose: (error?: PackfarmError) => void;
}

export function openChannel(opts: ChannelOptions): Channel {
  const decoder = createFrameDecoder(opts.source);
  let bytesOut = 0;
  let bytesIn = 0;
  let closed = false;
  const finish = (error?: PackfarmError) => {
    if (closed) return;
    closed = true;
    opts.input.off('data', onData);
    opts.onClose(error);
  };
  const onData = (chunk: Buffer) => {
    if (closed) return;
    bytesIn += chunk.length;
    let frames: Frame[];
    try {
      frames = decoder.push(chunk);
    } catch (err) {
      finish(err as PackfarmError);
      return;
    }
    for (const f of frames) {
      if (closed) return;
      opts.onFrame(f);
    }
  };
  opts.input.on('data', onData);
  opts.input.on('end', () => {
    try {
      decoder.end();
      finish();
    } catch (err) {
      finish(err as PackfarmError);
    }
  });
  opts.input.on('error', (err) => finish(protocolError(`${opts.source}: ${err.message}`)));
  opts.input.on('close', () => finish());
  // A peer that went away makes writes fail with EPIPE; the read side reports the close.
  opts.output.on('error', () => finish());

  const write = (buf: Buffer): Promise<void> => {
    if (closed || opts.output.destroyed || opts.output.writableEnded)
      return Promise.reject(protocolError(`${opts.source}: the connection is closed`));
    bytesOut += buf.length;
    if (opts.output.write(buf)) return Promise.resolve();
    return new Promise((resolve, reject) => {
      const done = () => {
        opts.output.off('drain', done);
        opts.output.off('close', gone);
        resolve();
      };
      const gone = () => {
        opts.output.off('drain', done);
        reject(protocolError(`${opts.source}: the connection closed while sending`));
      };
      opts.output.once('drain', done);
      opts.output.once('close', gone);
    });
  };

  return {
    send: (message) => write(encodeMessage(message)),
    async sendBlob(digest, data) {
      let n = 0;
      for await (const chunk of data as AsyncIterable<Buffer>) {
        for (let off = 0; off < chunk.length; off += BLOB_CHUNK_BYTES) {
          const part = chunk.subarray(off, Math.min(off + BLOB_CHUNK_BYTES, chunk.length));
          n += part.length;
          await write(encodeBlobChunk(digest, part));
        }
      }
      await write(encodeBlobChunk(digest, Buffer.alloc(0)));
      return n;
    },
    get bytesOut() {
      return bytesOut;
    },
    get bytesIn() {
      return bytesIn;
    },
    close() {
      if (!opts.output.writableEnded) opts.output.end();
      finish();
    },
  };
}
