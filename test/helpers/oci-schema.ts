import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import AjvModule from 'ajv-draft-04';
import addFormatsModule from 'ajv-formats';

// Both packages are CommonJS with `exports.default`; under NodeNext the default import is the module object.
const Ajv = AjvModule.default;
const addFormats = addFormatsModule.default;
type AjvInstance = InstanceType<typeof Ajv>;

/**
 * Validation of what we write against the OCI image-spec JSON schemas (draft-04), loaded from
 * $OCI_SCHEMA_DIR or ../shared/oci-schema beside the repository.
 *
 * The spec's schema files resolve their relative $refs against nested `id`s that point at two different
 * base URLs (…/schema/ and …/schema/image/), which the Go validator maps to files by name. Here nested ids are
 * dropped and the shared definition files are registered under both bases, so every relative $ref lands on
 * the file of that name.
 */
export type OciSchemaKind = 'manifest' | 'index' | 'config' | 'layout' | 'descriptor';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export function ociSchemaDir(): string {
  const configured = process.env.OCI_SCHEMA_DIR ?? '../shared/oci-schema';
  const dir = isAbsolute(configured) ? configured : resolve(repoRoot, configured);
  if (!existsSync(join(dir, 'image-manifest-schema.json')))
    throw new Error(
      `OCI JSON schemas not found in ${dir}: set OCI_SCHEMA_DIR to a copy of opencontainers/image-spec schema/`,
    );
  return dir;
}

const BASES = ['https://opencontainers.org/schema/', 'https://opencontainers.org/schema/image/'];
const SHARED = ['defs.json', 'defs-descriptor.json', 'content-descriptor.json'];
const TOP: Record<OciSchemaKind, string> = {
  manifest: 'https://opencontainers.org/schema/image/manifest',
  index: 'https://opencontainers.org/schema/image/index',
  config: 'https://opencontainers.org/schema/image/config',
  layout: 'https://opencontainers.org/schema/image/layout',
  descriptor: 'https://opencontainers.org/schema/descriptor',
};

function stripNestedIds(node: unknown, top: boolean): unknown {
  if (Array.isArray(node)) return node.map((n) => stripNestedIds(n, false));
  if (node === null || typeof node !== 'object') return node;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(node)) {
    if (k === 'id' && !top && typeof v === 'string') continue;
    out[k] = stripNestedIds(v, false);
  }
  return out;
}

let ajv: AjvInstance | undefined;

function compiler(): AjvInstance {
  if (ajv) return ajv;
  const dir = ociSchemaDir();
  const a = new Ajv({ allErrors: true, strict: false });
  addFormats(a);
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const schema = stripNestedIds(JSON.parse(readFileSync(join(dir, file), 'utf8')), true) as Record<
      string,
      unknown
    >;
    if (SHARED.includes(file)) {
      for (const base of BASES) a.addSchema({ ...schema, id: `${base}${file}` });
      // content-descriptor.json is also known by its own id.
      if (typeof schema.id === 'string' && !BASES.some((b) => `${b}${file}` === schema.id))
        a.addSchema(schema);
    } else {
      a.addSchema(schema);
    }
  }
  ajv = a;
  return a;
}

/** Errors (empty when valid) of `doc` against the OCI schema of `kind`. */
export function ociSchemaErrors(kind: OciSchemaKind, doc: unknown): string[] {
  const validate = compiler().getSchema(TOP[kind]);
  if (!validate) throw new Error(`OCI schema ${TOP[kind]} was not loaded from ${ociSchemaDir()}`);
  if (validate(doc)) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message ?? ''}`.trim());
}

/** Throws with every schema error when `doc` (an object, or JSON text/bytes) is not valid. */
export function assertOciValid(kind: OciSchemaKind, doc: unknown): void {
  const value = typeof doc === 'string' || Buffer.isBuffer(doc) ? JSON.parse(doc.toString()) : doc;
  const errors = ociSchemaErrors(kind, value);
  if (errors.length > 0) throw new Error(`not a valid OCI ${kind}: ${errors.join('; ')}`);
}
