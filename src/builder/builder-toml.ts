import { readFile } from 'node:fs/promises';
import { z } from 'zod';
import { type Platform, parsePlatform } from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';
import { parseToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';

/**
 * pack's builder.toml, the part a build needs: which buildpacks (`[[buildpacks]]` uri), in which order
 * (`[[order]]` groups, versions optional) and which run image (`[run]` images, or the legacy `[stack]`
 * run-image), the build image (`[build] image`, where the oci executor runs buildpacks) and the `[[targets]]`
 * (the default platforms of a build). Other tables (`[lifecycle]`, `[system]` …) are accepted and left alone:
 * packfarm brings its own lifecycle.
 */

const nonEmpty = z.string().min(1, 'must not be empty');

const BuildpackEntrySchema = z.looseObject({
  id: z.string().optional(),
  version: z.string().optional(),
  uri: z.string({ error: 'is required (a buildpack directory or archive, relative to builder.toml)' }).min(1),
});

const OrderEntrySchema = z.looseObject({
  id: nonEmpty,
  version: z.string().optional(),
  optional: z.boolean().optional(),
});

const RunImageSchema = z.looseObject({
  image: nonEmpty,
  mirrors: z.array(z.string()).optional(),
});

export const BuilderTomlSchema = z.looseObject({
  description: z.string().optional(),
  buildpacks: z.array(BuildpackEntrySchema).default([]),
  order: z.array(z.looseObject({ group: z.array(OrderEntrySchema).default([]) })).default([]),
  run: z.looseObject({ images: z.array(RunImageSchema).default([]) }).optional(),
  stack: z
    .looseObject({
      id: z.string().optional(),
      'run-image': z.string().optional(),
      'run-image-mirrors': z.array(z.string()).optional(),
      'build-image': z.string().optional(),
    })
    .optional(),
  build: z
    .looseObject({
      image: z.string().optional(),
      env: z
        .array(
          z.looseObject({
            name: z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/, 'must be an environment variable name'),
            value: z.string(),
            suffix: z.enum(['default', 'override', 'append', 'prepend']).optional(),
            delim: z.string().optional(),
          }),
        )
        .default([]),
    })
    .optional(),
  targets: z
    .array(
      z.looseObject({
        os: nonEmpty,
        arch: nonEmpty,
        variant: z.string().optional(),
        distros: z.array(z.looseObject({ name: nonEmpty, version: z.string().optional() })).optional(),
      }),
    )
    .default([]),
  lifecycle: z.looseObject({ version: z.string().optional(), uri: z.string().optional() }).optional(),
});

export interface BuilderTomlBuildpack {
  id?: string;
  version?: string;
  uri: string;
}

export interface BuilderTomlOrderEntry {
  id: string;
  /** Absent: the only version of `id` among the builder's buildpacks. */
  version?: string;
  optional: boolean;
}

export interface BuilderToml {
  description?: string;
  buildpacks: BuilderTomlBuildpack[];
  order: { group: BuilderTomlOrderEntry[] }[];
  /** Run image first, then its mirrors; [] when builder.toml names none. */
  runImages: string[];
  /** `[build] image` (or legacy `[stack] build-image`): the image buildpacks run in (oci executor). */
  buildImage?: string;
  /**
   * Every `[[run.images]]` entry (or the legacy `[stack]` run image), in order; `mirrors` only when the file
   * has the key (pack writes `null` in its labels for a missing list and `[]` for an empty one).
   */
  runImageEntries: { image: string; mirrors?: string[] }[];
  /** `[[build.env]]`: operator env for buildpacks (/cnb/build-config/env). */
  buildEnv: {
    name: string;
    value: string;
    suffix?: 'default' | 'override' | 'append' | 'prepend';
    delim?: string;
  }[];
  /** `[[targets]]` (RFC 0128) as written, with their distros. */
  targetEntries: {
    os: string;
    arch: string;
    variant?: string;
    distros: { name: string; version?: string }[];
  }[];
  /** `[stack] id`, the deprecated stack label. */
  stackId?: string;
  /** Tables accepted but not used by packfarm (`[lifecycle]`, `[[extensions]]`, `[system]` …), for a note. */
  unused: string[];
  /** `[[targets]]`: the platforms the builder is for (a build's default targets), normalized. */
  targets: Platform[];
}

/** Parse builder.toml text; errors name `source` and the offending field. */
export function parseBuilderToml(text: string, source: string): BuilderToml {
  const raw = parseWith(BuilderTomlSchema, parseToml(text, source), source, 'INVALID_BUILDER_TOML');
  const invalid = (field: string, why: string, hint?: string) =>
    new PackfarmError('INVALID_BUILDER_TOML', `${source}: invalid content: ${field}: ${why}`, {
      hint,
    });

  const buildpacks = raw.buildpacks.map((b, i): BuilderTomlBuildpack => {
    if ('image' in b)
      throw invalid(
        `buildpacks[${i}].image`,
        'buildpack images are not supported yet',
        'use uri = "<dir or archive>"',
      );
    return {
      uri: b.uri,
      ...(b.id ? { id: b.id } : {}),
      ...(b.version ? { version: b.version } : {}),
    };
  });

  const order = raw.order.map((g, i) => {
    if (g.group.length === 0) throw invalid(`order[${i}].group`, 'a group needs at least one buildpack');
    return {
      group: g.group.map((e) => ({
        id: e.id,
        ...(e.version ? { version: e.version } : {}),
        optional: e.optional ?? false,
      })),
    };
  });

  let runImages: string[] = [];
  const first = raw.run?.images[0];
  if (first) runImages = [first.image, ...(first.mirrors ?? [])];
  else if (raw.stack?.['run-image'])
    runImages = [raw.stack['run-image'], ...(raw.stack['run-image-mirrors'] ?? [])];

  const runImageEntries: BuilderToml['runImageEntries'] = (raw.run?.images ?? []).map((r) => ({
    image: r.image,
    ...(r.mirrors ? { mirrors: r.mirrors } : {}),
  }));
  const stackMirrors = raw.stack?.['run-image-mirrors'];
  if (runImageEntries.length === 0 && raw.stack?.['run-image'])
    runImageEntries.push({
      image: raw.stack['run-image'],
      ...(stackMirrors ? { mirrors: stackMirrors } : {}),
    });
  const buildEnv = (raw.build?.env ?? []).map((e) => ({
    name: e.name,
    value: e.value,
    ...(e.suffix ? { suffix: e.suffix } : {}),
    ...(e.delim !== undefined ? { delim: e.delim } : {}),
  }));
  const targetEntries = raw.targets.map((t) => ({
    os: t.os,
    arch: t.arch,
    ...(t.variant ? { variant: t.variant } : {}),
    distros: (t.distros ?? []).map((d) => ({ name: d.name, ...(d.version ? { version: d.version } : {}) })),
  }));
  const rawTable = raw as Record<string, unknown>;
  const unused = ['lifecycle', 'extensions', 'order-extensions', 'system'].filter(
    (k) => rawTable[k] !== undefined,
  );
  const targets = raw.targets.map((t, i) => {
    const text = `${t.os}/${t.arch}${t.variant ? `/${t.variant}` : ''}`;
    return parsePlatform(text, `${source}: targets[${i}]`);
  });
  const out: BuilderToml = {
    buildpacks,
    order,
    runImages,
    targets,
    runImageEntries,
    buildEnv,
    targetEntries,
    unused,
  };
  if (raw.stack?.id) out.stackId = raw.stack.id;
  if (raw.description !== undefined) out.description = raw.description;
  const buildImage = raw.build?.image || raw.stack?.['build-image'];
  if (buildImage) out.buildImage = buildImage;
  return out;
}

export async function readBuilderToml(path: string): Promise<BuilderToml> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new PackfarmError(
      'BUILDER_NOT_FOUND',
      `${path}: cannot read builder.toml: ${(err as Error).message}`,
      {
        cause: err,
      },
    );
  }
  return parseBuilderToml(text, path);
}
