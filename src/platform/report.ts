import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { writeFileAtomic } from '../util/fs.js';
import { parseToml, stringifyToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';

/**
 * report.toml (platform.md "report.toml"): what the exporter produced. `tags` are the full references written,
 * `digest` the manifest digest, `manifest-size` its byte count; `image-id` exists only for daemon exports,
 * which packfarm does not do.
 */
export interface ExportReport {
  image: {
    tags: string[];
    digest: string;
    imageId?: string;
    manifestSize: number;
  };
  build?: { bom?: unknown[] };
}

const schema = z.object({
  image: z.object({
    tags: z.array(z.string()).default([]),
    digest: z.string().default(''),
    'image-id': z.string().optional(),
    'manifest-size': z.number().int().nonnegative().default(0),
  }),
  build: z.looseObject({ bom: z.array(z.unknown()).optional() }).optional(),
});

export function encodeReport(r: ExportReport): string {
  return stringifyToml({
    image: {
      tags: r.image.tags,
      digest: r.image.digest,
      ...(r.image.imageId ? { 'image-id': r.image.imageId } : {}),
      'manifest-size': r.image.manifestSize,
    },
    ...(r.build?.bom?.length ? { build: { bom: r.build.bom } } : {}),
  });
}

export function parseReport(text: string, source: string): ExportReport {
  const doc = parseWith(schema, parseToml(text, source), source, 'INVALID_REPORT');
  return {
    image: {
      tags: doc.image.tags,
      digest: doc.image.digest,
      ...(doc.image['image-id'] ? { imageId: doc.image['image-id'] } : {}),
      manifestSize: doc.image['manifest-size'],
    },
    ...(doc.build?.bom ? { build: { bom: doc.build.bom } } : {}),
  };
}

export async function writeReport(path: string, r: ExportReport): Promise<void> {
  await writeFileAtomic(path, encodeReport(r));
}

export async function readReport(path: string): Promise<ExportReport> {
  return parseReport(await readFile(path, 'utf8'), path);
}
