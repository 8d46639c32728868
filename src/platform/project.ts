import { isAbsolute, join, resolve } from 'node:path';
import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { silentLogger } from '../util/log.js';
import { parseToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';
import { readFileIfExists } from '../util/fs.js';

/**
 * project.toml, the project descriptor (extensions/project-descriptor.md). Read by the platform, never by
 * the lifecycle: it picks buildpacks, user env and the files that take part in the build.
 *
 * Schema 0.2 keeps CNB keys under `[io.buildpacks]`; schema 0.1 (what pack assumes when `[_]
 * schema-version` is missing) used `[project]` and `[build]`. Both parse into one normalised value.
 */
export interface ProjectDescriptor {
  schemaVersion: '0.1' | '0.2';
  /** The file it came from; relative buildpack `uri`s resolve against its directory. */
  source: string;
  project: ProjectInfo;
  builder: string | undefined;
  include: string[] | undefined;
  exclude: string[] | undefined;
  /** Replaces the builder's order with this single group when non-empty. */
  group: ProjectBuildpack[];
  /** Inserted at the start / end of every group of the order. */
  pre: ProjectBuildpack[];
  post: ProjectBuildpack[];
  /** Build-time user env (become `<platform>/env/<name>` files). */
  env: { name: string; value: string }[];
}

export interface ProjectInfo {
  id: string | undefined;
  name: string | undefined;
  version: string | undefined;
  authors: string[];
  documentationUrl: string | undefined;
  sourceUrl: string | undefined;
  licenses: { type: string | undefined; uri: string | undefined }[];
  metadata: Record<string, unknown>;
}

export interface ProjectBuildpack {
  id: string | undefined;
  version: string | undefined;
  uri: string | undefined;
  /** An inline buildpack: the script becomes `bin/build` run by `shell`. */
  script: { api: string; shell: string; inline: string } | undefined;
}

const buildpackSchema = z.object({
  id: z.string().optional(),
  version: z.string().optional(),
  uri: z.string().optional(),
  script: z
    .object({
      api: z.string().min(1, 'an inline buildpack needs `api`'),
      shell: z.string().optional(),
      inline: z.string({ error: 'an inline buildpack needs `inline` (the script)' }),
    })
    .optional(),
});
const envSchema = z.object({ name: z.string().min(1), value: z.string() });
const licenseSchema = z.object({ type: z.string().optional(), uri: z.string().optional() });
const strings = z.array(z.string());

const v02Schema = z.object({
  _: z.object({
    'schema-version': z.string(),
    id: z.string().optional(),
    name: z.string().optional(),
    version: z.string().optional(),
    authors: strings.optional(),
    'documentation-url': z.string().optional(),
    'source-url': z.string().optional(),
    licenses: z.array(licenseSchema).optional(),
    metadata: z.record(z.string(), z.unknown()).optional(),
  }),
  io: z
    .object({
      buildpacks: z
        .object({
          builder: z.string().optional(),
          include: strings.optional(),
          exclude: strings.optional(),
          group: z.array(buildpackSchema).optional(),
          pre: z.object({ group: z.array(buildpackSchema).optional() }).optional(),
          post: z.object({ group: z.array(buildpackSchema).optional() }).optional(),
          build: z.object({ env: z.array(envSchema).optional() }).optional(),
          // Deprecated spelling pack still reads: [[io.buildpacks.env.build]].
          env: z.object({ build: z.array(envSchema).optional() }).optional(),
        })
        .optional(),
    })
    .optional(),
});

const v01Schema = z.object({
  project: z
    .object({
      id: z.string().optional(),
      name: z.string().optional(),
      version: z.string().optional(),
      authors: strings.optional(),
      'documentation-url': z.string().optional(),
      'source-url': z.string().optional(),
      licenses: z.array(licenseSchema).optional(),
    })
    .optional(),
  build: z
    .object({
      builder: z.string().optional(),
      include: strings.optional(),
      exclude: strings.optional(),
      buildpacks: z.array(buildpackSchema).optional(),
      env: z.array(envSchema).optional(),
    })
    .optional(),
  metadata: z.record(z.string(), z.unknown()).optional(),
});

const KNOWN_V02_CNB_KEYS = new Set(['builder', 'include', 'exclude', 'group', 'pre', 'post', 'build', 'env']);
const KNOWN_V02_PROJECT_KEYS = new Set([
  'schema-version',
  'id',
  'name',
  'version',
  'authors',
  'documentation-url',
  'source-url',
  'licenses',
  'metadata',
]);

export interface ParseProjectOptions {
  logger?: Logger;
}

/** Parse project.toml text. `source` names the file in errors and anchors relative buildpack URIs. */
export function parseProjectDescriptor(
  text: string,
  source: string,
  opts: ParseProjectOptions = {},
): ProjectDescriptor {
  const log = opts.logger ?? silentLogger;
  const raw = parseToml(text, source);
  const underscore = raw._;
  const declared =
    underscore && typeof underscore === 'object'
      ? (underscore as Record<string, unknown>)['schema-version']
      : undefined;
  let descriptor: ProjectDescriptor;
  if (declared === undefined) {
    log.warn(`${source}: no [_] schema-version; reading it as project descriptor schema 0.1`);
    warnUnknownTables(raw, source, log, '0.1');
    descriptor = fromV01(parseWith(v01Schema, raw, source, 'INVALID_PROJECT_DESCRIPTOR'), source);
  } else if (declared === '0.2') {
    const parsed = parseWith(v02Schema, raw, source, 'INVALID_PROJECT_DESCRIPTOR');
    warnUnknownKeys(raw, source, log);
    warnUnknownTables(raw, source, log, '0.2');
    descriptor = fromV02(parsed, source);
  } else if (declared === '0.1') {
    warnUnknownTables(raw, source, log, '0.1');
    descriptor = fromV01(parseWith(v01Schema, raw, source, 'INVALID_PROJECT_DESCRIPTOR'), source);
  } else {
    throw new PackfarmError(
      'UNSUPPORTED_PROJECT_SCHEMA',
      `${source}: _.schema-version: unsupported project descriptor schema ${JSON.stringify(declared)}`,
      { hint: 'packfarm reads project descriptor schema 0.1 and 0.2' },
    );
  }
  validate(descriptor);
  return descriptor;
}

/** Read `<dir>/project.toml` (or the given file); undefined when it does not exist. */
export async function readProjectDescriptor(
  path: string,
  opts: ParseProjectOptions = {},
): Promise<ProjectDescriptor | undefined> {
  const text = await readFileIfExists(path);
  return text === undefined ? undefined : parseProjectDescriptor(text, path, opts);
}

/** Where a project.toml buildpack comes from, with relative paths made absolute. */
export type BuildpackSource =
  | { kind: 'path'; path: string }
  | { kind: 'url'; url: string }
  /** A buildpackage: `docker://REF`, `oci:<absolute dir>[:TAG]`, or an absolute `.cnb` file path. */
  | { kind: 'package'; uri: string }
  | { kind: 'registry'; id: string; version: string | undefined }
  | { kind: 'builder'; id: string; version: string | undefined }
  | { kind: 'inline'; id: string; api: string; shell: string; inline: string };

/**
 * Resolve a buildpack reference of a project descriptor. A `uri` without scheme (or `file://`) is a path
 * relative to the directory of project.toml; `docker://`, `oci:DIR[:TAG]` (DIR relative to it too) and a
 * `.cnb` file name a buildpackage; `urn:cnb:registry:` the buildpack registry; `http(s)://` an archive; a bare id (or `urn:buildpack:<id>`) a buildpack of the builder.
 */
export function resolveProjectBuildpack(bp: ProjectBuildpack, projectDir: string): BuildpackSource {
  if (bp.script) {
    return {
      kind: 'inline',
      id: bp.id ?? '',
      api: bp.script.api,
      shell: bp.script.shell,
      inline: bp.script.inline,
    };
  }
  const uri = bp.uri;
  if (uri === undefined || uri === '') return { kind: 'builder', id: bp.id ?? '', version: bp.version };
  if (uri.startsWith('docker://')) return { kind: 'package', uri };
  if (uri.startsWith('oci:')) {
    const rest = uri.slice('oci:'.length);
    return { kind: 'package', uri: isAbsolute(rest) ? uri : `oci:${join(projectDir, rest)}` };
  }
  if (uri.startsWith('http://') || uri.startsWith('https://')) return { kind: 'url', url: uri };
  if (uri.startsWith('file://')) {
    const path = resolve(projectDir, decodeURI(new URL(uri).pathname));
    return path.endsWith('.cnb') ? { kind: 'package', uri: path } : { kind: 'path', path };
  }
  if (uri.startsWith('urn:cnb:registry:')) {
    const [id, version] = uri.slice('urn:cnb:registry:'.length).split('@');
    return { kind: 'registry', id: id ?? '', version };
  }
  if (uri.startsWith('urn:buildpack:') || uri.startsWith('urn:cnb:builder:')) {
    const rest = uri.startsWith('urn:buildpack:')
      ? uri.slice('urn:buildpack:'.length)
      : uri.slice('urn:cnb:builder:'.length);
    const [id, version] = rest.split('@');
    return { kind: 'builder', id: id ?? '', version: version ?? bp.version };
  }
  if (/^[a-z][a-z0-9+.-]*:\/\//i.test(uri)) {
    throw new PackfarmError(
      'UNSUPPORTED_BUILDPACK_URI',
      `buildpack uri ${JSON.stringify(uri)}: unsupported scheme`,
    );
  }
  const path = isAbsolute(uri) ? uri : join(projectDir, uri);
  return uri.endsWith('.cnb') ? { kind: 'package', uri: path } : { kind: 'path', path };
}

function fromV02(d: z.output<typeof v02Schema>, source: string): ProjectDescriptor {
  const cnb = d.io?.buildpacks;
  return {
    schemaVersion: '0.2',
    source,
    project: {
      id: d._.id,
      name: d._.name,
      version: d._.version,
      authors: d._.authors ?? [],
      documentationUrl: d._['documentation-url'],
      sourceUrl: d._['source-url'],
      licenses: (d._.licenses ?? []).map((l) => ({ type: l.type, uri: l.uri })),
      metadata: d._.metadata ?? {},
    },
    builder: cnb?.builder,
    include: cnb?.include,
    exclude: cnb?.exclude,
    group: (cnb?.group ?? []).map(normaliseBuildpack),
    pre: (cnb?.pre?.group ?? []).map(normaliseBuildpack),
    post: (cnb?.post?.group ?? []).map(normaliseBuildpack),
    env: cnb?.build?.env ?? cnb?.env?.build ?? [],
  };
}

function fromV01(d: z.output<typeof v01Schema>, source: string): ProjectDescriptor {
  return {
    schemaVersion: '0.1',
    source,
    project: {
      id: d.project?.id,
      name: d.project?.name,
      version: d.project?.version,
      authors: d.project?.authors ?? [],
      documentationUrl: d.project?.['documentation-url'],
      sourceUrl: d.project?.['source-url'],
      licenses: (d.project?.licenses ?? []).map((l) => ({ type: l.type, uri: l.uri })),
      metadata: d.metadata ?? {},
    },
    builder: d.build?.builder,
    include: d.build?.include,
    exclude: d.build?.exclude,
    group: (d.build?.buildpacks ?? []).map(normaliseBuildpack),
    pre: [],
    post: [],
    env: d.build?.env ?? [],
  };
}

function normaliseBuildpack(b: z.output<typeof buildpackSchema>): ProjectBuildpack {
  return {
    id: b.id || undefined,
    version: b.version || undefined,
    uri: b.uri || undefined,
    script: b.script
      ? { api: b.script.api, shell: b.script.shell || '/bin/sh', inline: b.script.inline }
      : undefined,
  };
}

function validate(d: ProjectDescriptor): void {
  const where = d.schemaVersion === '0.2' ? 'io.buildpacks' : 'build';
  if (d.include !== undefined && d.exclude !== undefined) {
    throw new PackfarmError(
      'INVALID_PROJECT_DESCRIPTOR',
      `${d.source}: ${where}: include and exclude are mutually exclusive, found both`,
    );
  }
  d.project.licenses.forEach((l, i) => {
    if (!l.type && !l.uri) {
      throw new PackfarmError(
        'INVALID_PROJECT_DESCRIPTOR',
        `${d.source}: ${d.schemaVersion === '0.2' ? '_' : 'project'}.licenses[${i}]: needs a type or a uri`,
      );
    }
  });
  const lists: [string, ProjectBuildpack[]][] =
    d.schemaVersion === '0.2'
      ? [
          ['io.buildpacks.group', d.group],
          ['io.buildpacks.pre.group', d.pre],
          ['io.buildpacks.post.group', d.post],
        ]
      : [['build.buildpacks', d.group]];
  for (const [name, list] of lists) {
    list.forEach((b, i) => {
      const field = `${d.source}: ${name}[${i}]`;
      if (b.script) {
        if (!b.id)
          throw new PackfarmError(
            'INVALID_PROJECT_DESCRIPTOR',
            `${field}.id: an inline buildpack needs an id`,
          );
        if (b.uri || b.version) {
          throw new PackfarmError(
            'INVALID_PROJECT_DESCRIPTOR',
            `${field}: script cannot be combined with ${b.uri ? 'uri' : 'version'}`,
          );
        }
        return;
      }
      if (!b.id && !b.uri) {
        throw new PackfarmError('INVALID_PROJECT_DESCRIPTOR', `${field}: needs an id or a uri`);
      }
      if (b.uri && b.version) {
        throw new PackfarmError('INVALID_PROJECT_DESCRIPTOR', `${field}: uri and version cannot both be set`);
      }
    });
  }
}

/**
 * Top-level tables that are not the descriptor's are ignored, with a warning: most often a typo
 * (`[io.buildpack]`) that would otherwise silently drop settings. `io.*` besides `io.buildpacks` is named as a
 * likely typo.
 */
function warnUnknownTables(
  raw: Record<string, unknown>,
  source: string,
  log: Logger,
  schema: '0.1' | '0.2',
): void {
  const known = schema === '0.2' ? ['_', 'io'] : ['_', 'project', 'build', 'metadata'];
  for (const k of Object.keys(raw)) {
    if (known.includes(k)) continue;
    if (schema === '0.2' && (k === 'project' || k === 'build' || k === 'metadata'))
      log.warn(
        `${source}: [${k}] is a schema 0.1 table; schema 0.2 reads [_] and [io.buildpacks], so it is ignored`,
      );
    else log.warn(`${source}: [${tableName(k, raw[k])}] is not a project descriptor table and is ignored`);
  }
  const io = raw.io;
  if (schema === '0.2' && io && typeof io === 'object')
    for (const k of Object.keys(io).filter((x) => x !== 'buildpacks'))
      log.warn(
        `${source}: [io.${k}] is not a project descriptor table and is ignored (did you mean [io.buildpacks]?)`,
      );
}

/** `com` → `com.example` while the table holds exactly one subtable, as it was most likely written. */
function tableName(key: string, value: unknown): string {
  let name = key;
  let v = value;
  for (;;) {
    if (!v || typeof v !== 'object' || Array.isArray(v)) return name;
    const entries = Object.entries(v);
    const only = entries.length === 1 ? entries[0] : undefined;
    if (!only?.[1] || typeof only[1] !== 'object' || Array.isArray(only[1])) return name;
    name = `${name}.${only[0]}`;
    v = only[1];
  }
}

function warnUnknownKeys(raw: Record<string, unknown>, source: string, log: Logger): void {
  const underscore = raw._ as Record<string, unknown>;
  for (const k of Object.keys(underscore)) {
    if (!KNOWN_V02_PROJECT_KEYS.has(k))
      log.warn(`${source}: _.${k} is not part of schema 0.2 and is ignored`);
  }
  const io = raw.io as Record<string, unknown> | undefined;
  const cnb = io?.buildpacks as Record<string, unknown> | undefined;
  for (const k of Object.keys(cnb ?? {})) {
    if (!KNOWN_V02_CNB_KEYS.has(k))
      log.warn(`${source}: io.buildpacks.${k} is not part of schema 0.2 and is ignored`);
  }
}
