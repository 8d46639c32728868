import { join } from 'node:path';
import { z } from 'zod';
import { parseToml, stringifyToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';
import { readFileIfExists } from '../util/fs.js';

/**
 * `<layers>/<bp>/store.toml`: free-form `[metadata]` a buildpack keeps from one build to the next. The
 * exporter stores it in the image's lifecycle metadata label and the restorer writes it back.
 */
export interface StoreToml {
  metadata: Record<string, unknown>;
}

const schema = z.object({ metadata: z.record(z.string(), z.unknown()).optional() });

export function parseStoreToml(text: string, source: string): StoreToml {
  const parsed = parseWith(schema, parseToml(text, source), source, 'INVALID_STORE_TOML');
  return { metadata: parsed.metadata ?? {} };
}

export function encodeStoreToml(store: StoreToml): string {
  return stringifyToml({ metadata: store.metadata });
}

/** Read a buildpack's store.toml; undefined when it wrote none. */
export async function readStoreToml(bpLayersDir: string): Promise<StoreToml | undefined> {
  const path = join(bpLayersDir, 'store.toml');
  const text = await readFileIfExists(path);
  return text === undefined ? undefined : parseStoreToml(text, path);
}
