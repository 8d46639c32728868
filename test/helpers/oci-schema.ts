import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { dirname, isAbsolute, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import AjvModule from 'ajv-draft-04';
import addFormatsModule from 'ajv-formats';
import { TestRunner } from 'vitest';

// Both packages are CommonJS with `exports.default`; under NodeNext the default import is the module object.
const Ajv = AjvModule.default;
const addFormats = addFormatsModule.default;
type AjvInstance = InstanceType<typeof Ajv>;

/**
 * Validation of what we write against the OCI image-spec JSON schemas (draft-04), loaded from $OCI_SCHEMA_DIR
 * (a copy of opencontainers/image-spec `schema/`; `.ci/run` sets it when ../shared/oci-schema exists beside
 * the checkout).
 *
 * Without OCI_SCHEMA_DIR, a test that asks for a schema check is reported as skipped (ctx.skip with
 * OCI_SCHEMA_SKIP_NOTE, which the summary reporter prints), so `npm test` on a fresh clone passes and says what
 * it did not check. Called outside a test (a hook checking its own fixture), the check is left out then; the
 * tests that validate what packfarm wrote are the ones that skip. A set OCI_SCHEMA_DIR without the schemas
 * fails.
 *
 * The spec's schema files resolve their relative $refs against nested `id`s that point at two different
 * base URLs (…/schema/ and …/schema/image/), which the Go validator maps to files by name. Here nested ids are
 * dropped and the shared definition files are registered under both bases, so every relative $ref lands on
 * the file of that name.
 */
export type OciSchemaKind = 'manifest' | 'index' | 'config' | 'layout' | 'descriptor';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export const OCI_SCHEMA_SKIP_NOTE =
  'needs the OCI JSON schemas: set OCI_SCHEMA_DIR to a copy of opencontainers/image-spec schema/ (.ci/run sets it when ../shared/oci-schema exists)';

/** The schema dir, or undefined when OCI_SCHEMA_DIR is not set. */
export function ociSchemaDir(): string | undefined {
  const configured = process.env.OCI_SCHEMA_DIR;
  if (!configured) return undefined;
  const dir = isAbsolute(configured) ? configured : resolve(repoRoot, configured);
  if (!existsSync(join(dir, 'image-manifest-schema.json')))
    throw new Error(
      `OCI_SCHEMA_DIR=${configured}: no OCI JSON schemas in ${dir} (expected image-manifest-schema.json …)`,
    );
  return dir;
}

/** The schema dir; without one, skip the running test (or return undefined outside a test). */
function schemasOrSkip(): string | undefined {
  const dir = ociSchemaDir();
  if (dir) return dir;
  const test = TestRunner.getCurrentTest();
  if (test) test.context.skip(OCI_SCHEMA_SKIP_NOTE);
  return undefined;
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

function compiler(dir: string): AjvInstance {
  if (ajv) return ajv;
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

/** Errors (empty when valid) of `doc` against the OCI schema of `kind`; [] outside a test without schemas. */
export function ociSchemaErrors(kind: OciSchemaKind, doc: unknown): string[] {
  const dir = schemasOrSkip();
  if (!dir) return [];
  const validate = compiler(dir).getSchema(TOP[kind]);
  if (!validate) throw new Error(`OCI schema ${TOP[kind]} was not loaded from ${dir}`);
  if (validate(doc)) return [];
  return (validate.errors ?? []).map((e) => `${e.instancePath || '(root)'} ${e.message ?? ''}`.trim());
}

/** Throws with every schema error when `doc` (an object, or JSON text/bytes) is not valid. */
export function assertOciValid(kind: OciSchemaKind, doc: unknown): void {
  const value = typeof doc === 'string' || Buffer.isBuffer(doc) ? JSON.parse(doc.toString()) : doc;
  const errors = ociSchemaErrors(kind, value);
  if (errors.length > 0) throw new Error(`not a valid OCI ${kind}: ${errors.join('; ')}`);
}
