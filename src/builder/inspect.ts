import { z } from 'zod';
import { readBaseImage, runnableChildren } from '../image/read.js';
import type { OpenedImage } from '../image/transport.js';
import { isIndexMediaType } from '../oci/media-types.js';
import { type Platform, formatPlatform, platformFromSpec } from '../oci/platform.js';
import { ImageIndexSchema } from '../oci/schemas.js';
import { PackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';
import { ORDER_LABEL } from './create.js';
import { BUILDER_METADATA_LABEL, BUILDPACK_LAYERS_LABEL } from './resolve.js';

/**
 * `packfarm builder inspect`: what a builder image holds, per platform, read from its labels only (manifests
 * and configs; no layer is downloaded): description, buildpacks, detection order, run images, creator.
 */

const ModuleSchema = z.looseObject({
  id: z.string(),
  version: z.string().optional(),
  name: z.string().optional(),
  homepage: z.string().optional(),
});
const RunImageSchema = z.looseObject({ image: z.string(), mirrors: z.array(z.string()).nullish() });
const MetadataSchema = z.looseObject({
  description: z.string().nullish(),
  buildpacks: z.array(ModuleSchema).nullish(),
  stack: z.looseObject({ runImage: RunImageSchema.nullish() }).nullish(),
  images: z.array(RunImageSchema).nullish(),
  lifecycle: z.looseObject({ version: z.string().nullish() }).nullish(),
  createdBy: z.looseObject({ name: z.string().nullish(), version: z.string().nullish() }).nullish(),
});
const OrderSchema = z.array(
  z.looseObject({
    group: z.array(
      z.looseObject({ id: z.string(), version: z.string().optional(), optional: z.boolean().optional() }),
    ),
  }),
);
const LayersSchema = z.record(
  z.string(),
  z.record(z.string(), z.looseObject({ layerDiffID: z.string(), api: z.string().optional() })),
);

export interface BuilderPlatformInfo {
  platform: string;
  digest: string;
  description: string;
  createdBy: string;
  stackId?: string;
  distro?: { name: string; version: string };
  buildpacks: { id: string; version?: string; homepage?: string; api?: string }[];
  order: { group: { id: string; version?: string; optional: boolean }[] }[];
  runImages: { image: string; mirrors: string[] }[];
}

export interface BuilderInfo {
  reference: string;
  digest: string;
  /** One entry per platform (one for a single image). */
  platforms: BuilderPlatformInfo[];
}

export async function inspectBuilder(opened: OpenedImage): Promise<BuilderInfo> {
  const top = await opened.store.resolve(opened.target);
  if (!top)
    throw new PackfarmError('IMAGE_NOT_FOUND', `builder ${opened.display}: no such image`, {
      hint: 'check the reference (and --insecure-registry for a plain-HTTP registry)',
    });
  const platforms: (Platform | undefined)[] = [];
  if (isIndexMediaType(top.mediaType)) {
    const stored = await opened.store.getManifest(opened.target);
    const index = parseWith(
      ImageIndexSchema,
      parseJson(stored.bytes.toString('utf8'), opened.display),
      opened.display,
    );
    for (const d of runnableChildren(index)) if (d.platform) platforms.push(platformFromSpec(d.platform));
  } else {
    platforms.push(undefined);
  }
  const out: BuilderPlatformInfo[] = [];
  for (const p of platforms) {
    const image = await readBaseImage(opened.store, opened.target, p);
    const labels = image.config.config?.Labels ?? {};
    const where = `${opened.display} (${formatPlatform(image.platform)})`;
    const metaText = labels[BUILDER_METADATA_LABEL];
    if (metaText === undefined)
      throw new PackfarmError(
        'BUILDER_INVALID',
        `${where}: no ${BUILDER_METADATA_LABEL} label: not a builder image`,
        {
          hint: 'make one with packfarm builder create (or pack builder create)',
        },
      );
    const meta = parseWith(
      MetadataSchema,
      parseJson(metaText, `${where} label ${BUILDER_METADATA_LABEL}`),
      `${where} label ${BUILDER_METADATA_LABEL}`,
    );
    const order = labels[ORDER_LABEL]
      ? parseWith(
          OrderSchema,
          parseJson(labels[ORDER_LABEL], `${where} label ${ORDER_LABEL}`),
          `${where} label ${ORDER_LABEL}`,
        )
      : [];
    const layers = labels[BUILDPACK_LAYERS_LABEL]
      ? parseWith(
          LayersSchema,
          parseJson(labels[BUILDPACK_LAYERS_LABEL], `${where} label ${BUILDPACK_LAYERS_LABEL}`),
          `${where} label ${BUILDPACK_LAYERS_LABEL}`,
        )
      : {};
    const runImages = (
      meta.images && meta.images.length > 0
        ? meta.images
        : meta.stack?.runImage?.image
          ? [meta.stack.runImage]
          : []
    ).map((r) => ({ image: r.image, mirrors: r.mirrors ?? [] }));
    const info: BuilderPlatformInfo = {
      platform: formatPlatform(image.platform),
      digest: image.digest,
      description: meta.description ?? '',
      createdBy: [meta.createdBy?.name, meta.createdBy?.version].filter(Boolean).join(' '),
      buildpacks: (meta.buildpacks ?? []).map((b) => {
        const api = b.version ? layers[b.id]?.[b.version]?.api : undefined;
        return {
          id: b.id,
          ...(b.version ? { version: b.version } : {}),
          ...(b.homepage ? { homepage: b.homepage } : {}),
          ...(api ? { api } : {}),
        };
      }),
      order: order.map((g) => ({
        group: g.group.map((e) => ({
          id: e.id,
          ...(e.version ? { version: e.version } : {}),
          optional: e.optional ?? false,
        })),
      })),
      runImages,
    };
    const stackId = labels['io.buildpacks.stack.id'];
    if (stackId) info.stackId = stackId;
    const dn = labels['io.buildpacks.base.distro.name'];
    if (dn) info.distro = { name: dn, version: labels['io.buildpacks.base.distro.version'] ?? '' };
    out.push(info);
  }
  return { reference: opened.display, digest: top.digest, platforms: out };
}
