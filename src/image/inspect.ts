import type { Digest } from '../oci/digest.js';
import { isImageManifestMediaType, isIndexMediaType } from '../oci/media-types.js';
import { formatPlatform, platformFromSpec } from '../oci/platform.js';
import { ImageConfigSchema, ImageIndexSchema, ImageManifestSchema } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';
import type { ImageStore, StoredManifest } from './store.js';

export interface IndexInspection {
  kind: 'index';
  digest: Digest;
  mediaType: string;
  size: number;
  annotations?: Record<string, string>;
  manifests: Array<{
    digest: Digest;
    mediaType: string;
    size: number;
    platform?: string;
    annotations?: Record<string, string>;
  }>;
}

export interface ImageInspection {
  kind: 'image';
  digest: Digest;
  mediaType: string;
  size: number;
  platform: string;
  created?: string;
  annotations?: Record<string, string>;
  layers: Array<{ digest: Digest; mediaType: string; size: number }>;
  /** Sum of the (compressed) layer sizes. */
  layersSize: number;
  config: {
    digest: Digest;
    mediaType: string;
    user?: string;
    workingDir?: string;
    entrypoint?: string[];
    cmd?: string[];
    env?: string[];
    labels?: Record<string, string>;
    exposedPorts?: string[];
  };
}

export type Inspection = IndexInspection | ImageInspection;

const MAX_CONFIG_BYTES = 16 * 1024 * 1024;

/** What `image inspect` shows, as data; `raw` is the manifest exactly as stored. */
export async function inspectImage(
  store: ImageStore,
  target: string,
): Promise<{ inspection: Inspection; raw: StoredManifest }> {
  const raw = await store.getManifest(target);
  const source = `${store.description}@${raw.digest}`;
  const doc = parseJson(raw.bytes.toString('utf8'), source);
  if (isIndexMediaType(raw.mediaType)) {
    const index = parseWith(ImageIndexSchema, doc, source);
    return {
      raw,
      inspection: {
        kind: 'index',
        digest: raw.digest,
        mediaType: raw.mediaType,
        size: raw.bytes.length,
        ...(index.annotations ? { annotations: index.annotations } : {}),
        manifests: index.manifests.map((d) => ({
          digest: d.digest as Digest,
          mediaType: d.mediaType,
          size: d.size,
          ...(d.platform ? { platform: formatPlatform(platformFromSpec(d.platform)) } : {}),
          ...(d.annotations ? { annotations: d.annotations } : {}),
        })),
      },
    };
  }
  if (!isImageManifestMediaType(raw.mediaType))
    throw new PackfarmError('UNSUPPORTED_MEDIA_TYPE', `${source} is ${raw.mediaType}, not an image or index`);
  const manifest = parseWith(ImageManifestSchema, doc, source);
  if (manifest.config.size > MAX_CONFIG_BYTES)
    throw new PackfarmError('TOO_LARGE', `${source}: config is ${manifest.config.size} bytes`);
  const chunks: Buffer[] = [];
  for await (const c of await store.getBlob(manifest.config.digest as Digest)) chunks.push(c as Buffer);
  const cfgSource = `${source} config ${manifest.config.digest}`;
  const config = parseWith(
    ImageConfigSchema,
    parseJson(Buffer.concat(chunks).toString('utf8'), cfgSource),
    cfgSource,
  );
  const c = config.config ?? {};
  const layers = manifest.layers.map((l) => ({
    digest: l.digest as Digest,
    mediaType: l.mediaType,
    size: l.size,
  }));
  return {
    raw,
    inspection: {
      kind: 'image',
      digest: raw.digest,
      mediaType: raw.mediaType,
      size: raw.bytes.length,
      platform: formatPlatform(platformFromSpec(config)),
      ...(config.created ? { created: config.created } : {}),
      ...(manifest.annotations ? { annotations: manifest.annotations } : {}),
      layers,
      layersSize: layers.reduce((n, l) => n + l.size, 0),
      config: {
        digest: manifest.config.digest as Digest,
        mediaType: manifest.config.mediaType,
        ...(c.User ? { user: c.User } : {}),
        ...(c.WorkingDir ? { workingDir: c.WorkingDir } : {}),
        ...(c.Entrypoint ? { entrypoint: c.Entrypoint } : {}),
        ...(c.Cmd ? { cmd: c.Cmd } : {}),
        ...(c.Env ? { env: c.Env } : {}),
        ...(c.Labels ? { labels: c.Labels } : {}),
        ...(c.ExposedPorts ? { exposedPorts: Object.keys(c.ExposedPorts).sort() } : {}),
      },
    },
  };
}
