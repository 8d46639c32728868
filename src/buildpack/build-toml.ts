import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import { parseToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';
import { type BomEntry, bomEntrySchema } from './launch.js';

/** `<layers>/<bp>/build.toml`: plan entries the buildpack did not meet, plus the deprecated build BOM. */
export interface BuildToml {
  unmet: string[];
  bom: BomEntry[];
}

const schema = z.object({
  unmet: z.array(z.object({ name: z.string().min(1, 'must name a Buildpack Plan entry') })).optional(),
  bom: z.array(bomEntrySchema).optional(),
});

/**
 * Parse build.toml. Every unmet name must be an entry of the buildpack's own plan (`planNames`); anything
 * else is a typo that would silently drop a dependency.
 */
export function parseBuildToml(
  text: string,
  opts: { source: string; buildpackId: string; planNames: readonly string[] },
): BuildToml {
  const source = `${opts.source} (buildpack ${opts.buildpackId})`;
  const parsed = parseWith(schema, parseToml(text, source), source, 'INVALID_BUILD_TOML');
  const unmet = (parsed.unmet ?? []).map((u, i) => {
    if (!opts.planNames.includes(u.name)) {
      throw new PackfarmError(
        'INVALID_BUILD_TOML',
        `${source}: unmet[${i}].name: ${JSON.stringify(u.name)} is not an entry of this buildpack's plan` +
          ` (plan has: ${opts.planNames.length ? opts.planNames.map((n) => JSON.stringify(n)).join(', ') : 'no entries'})`,
      );
    }
    return u.name;
  });
  const bom = (parsed.bom ?? []).map((b, i) => {
    if (b.version !== undefined) {
      throw new PackfarmError(
        'INVALID_BUILD_TOML',
        `${source}: bom[${i}].version: top-level version is not allowed; set metadata.version instead`,
      );
    }
    return { name: b.name, metadata: b.metadata ?? {} };
  });
  return { unmet, bom };
}
