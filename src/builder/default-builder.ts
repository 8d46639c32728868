import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rename, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { packfarmDataDir } from '../image/data-dir.js';
import { PackfarmError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import { parseToml, stringifyToml } from '../util/toml.js';
import { createBaseImages } from './base/create.js';
import { loadBaseDefinition } from './base/definition.js';
import { createBuilder } from './create.js';

/**
 * packfarm's default builder (builders/default/): what `packfarm build` uses when nothing names buildpacks.
 * It is made on first use — `base create` from builders/default/base.toml, then `builder create` from
 * builders/default/builder.toml with its build and run images pointed at those bases — into OCI layouts
 * under `<data dir>/default-builder/<hash>/`, where <hash> covers both files, every file of the buildpacks
 * builder.toml names and packfarm's version. Later builds find the `ready` marker and use the layout as it
 * is; editing a definition or a shipped buildpack gives a new hash, hence a new builder.
 */

/** builders/ and buildpacks/ ship with the package: two levels up from src/builder/ or dist/builder/. */
export const SHIPPED_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface DefaultBuilderOptions {
  env?: NodeJS.ProcessEnv;
  /** The definitions (default: <package>/builders/default). */
  definitionsDir?: string;
  insecureRegistries?: string[];
  /** Progress lines (first use takes minutes: Debian packages and every target's builder image). */
  onProgress?: (message: string) => void;
}

export interface DefaultBuilder {
  /** `oci:<dir>:latest`, a builder image index to pass as --builder. */
  reference: string;
  /** Whether this call made it (false: it was cached). */
  created: boolean;
  hash: string;
}

/** Where the default builder for these definitions lives, and its content hash (no image is read). */
export async function defaultBuilderLocation(
  opts: Pick<DefaultBuilderOptions, 'env' | 'definitionsDir'> = {},
): Promise<{
  hash: string;
  home: string;
  reference: string;
  builderToml: string;
  baseToml: string;
  buildpackDirs: string[];
  toml: Record<string, unknown>;
}> {
  const defs = opts.definitionsDir ?? join(SHIPPED_ROOT, 'builders', 'default');
  const builderToml = join(defs, 'builder.toml');
  const baseToml = join(defs, 'base.toml');
  for (const f of [builderToml, baseToml])
    if (!(await pathExists(f)))
      throw new PackfarmError('BUILDER_NOT_FOUND', `${f}: the default builder's definition is missing`, {
        hint: 'reinstall packfarm, or pass --builder',
      });
  const tomlText = await readFile(builderToml, 'utf8');
  const toml = parseToml(tomlText, builderToml);
  const buildpackDirs = (Array.isArray(toml.buildpacks) ? toml.buildpacks : []).map((b, i) => {
    const uri = (b as { uri?: unknown }).uri;
    if (typeof uri !== 'string' || uri.includes(':'))
      throw new PackfarmError(
        'INVALID_BUILDER_TOML',
        `${builderToml}: buildpacks[${i}].uri: the default builder names its buildpacks by relative directory`,
        { hint: 'use a path such as "../../buildpacks/<name>"' },
      );
    return resolve(defs, uri);
  });

  const hash = createHash('sha256');
  // packfarm's own version too: a packfarm that writes builders differently makes its own.
  const pkg = JSON.parse(await readFile(join(SHIPPED_ROOT, 'package.json'), 'utf8')) as { version?: string };
  hash.update(`packfarm-default-builder-1 ${pkg.version ?? ''}\n`);
  hash.update(tomlText);
  hash.update(await readFile(baseToml));
  for (const dir of buildpackDirs) await hashTree(hash, dir);
  const key = hash.digest('hex').slice(0, 16);

  const home = join(packfarmDataDir(opts.env), 'default-builder', key);
  const reference = `oci:${join(home, 'builder')}:latest`;

  return { hash: key, home, reference, builderToml, baseToml, buildpackDirs, toml };
}

export async function defaultBuilder(opts: DefaultBuilderOptions = {}): Promise<DefaultBuilder> {
  const { hash: key, home, reference, baseToml, buildpackDirs, toml } = await defaultBuilderLocation(opts);
  const ready = join(home, 'ready');
  if (await pathExists(ready)) return { reference, created: false, hash: key };

  const say = opts.onProgress ?? (() => {});
  say(`making the default builder (first use; cached as ${home})`);
  await mkdir(home, { recursive: true });
  const definition = await loadBaseDefinition(baseToml);
  const buildRef = `oci:${join(home, 'base')}:build`;
  const runRef = `oci:${join(home, 'base')}:run`;
  const bases = await createBaseImages({
    definition,
    buildTag: buildRef,
    runTag: runRef,
    dataDir: packfarmDataDir(opts.env),
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    onEvent: (e) => {
      if (e.type === 'image') say(`base ${e.kind} image ${e.platform}: ${e.packages} packages, ${e.digest}`);
      else if (e.type === 'warning') say(`warning: ${e.arch} ${e.kind}: ${e.message}`);
    },
  });

  // builder.toml as shipped, with absolute buildpack paths and the bases just made.
  const staged = {
    ...toml,
    buildpacks: (toml.buildpacks as Record<string, unknown>[]).map((b, i) => ({
      ...b,
      uri: buildpackDirs[i],
    })),
    build: { ...(toml.build as Record<string, unknown> | undefined), image: buildRef },
    run: { images: [{ image: runRef }] },
  };
  const stagedToml = join(home, 'builder.toml');
  await writeFile(stagedToml, stringifyToml(staged));
  const made = await createBuilder({
    image: reference,
    config: stagedToml,
    scratchDir: join(home, 'scratch'),
    onEvent: (e) => {
      if (e.type === 'target') say(`builder ${e.platform}: ${e.digest}`);
    },
  });
  await rm(join(home, 'scratch'), { recursive: true, force: true });
  // The marker goes last, through a rename: a build that died half-way is redone, never used.
  await writeFile(`${ready}.tmp`, `${made.digest}\nbuild ${bases.build.digest}\nrun ${bases.run.digest}\n`);
  await rename(`${ready}.tmp`, ready);
  say(`default builder ${made.digest} (${made.targets.length} platforms)`);
  return { reference, created: true, hash: key };
}

/** The build env variable through which the shipped buildpacks get extra CA certificates (PEM text). */
export const EXTRA_CA_ENV = 'BP_EXTRA_CA_CERTS';

/**
 * The CA certificates this machine trusts locally (Debian's place for them: `*.crt` PEM files in
 * /usr/local/share/ca-certificates), concatenated; undefined when there are none. The base images carry
 * Debian's bundle only, so a build behind a TLS-intercepting proxy needs these to reach the npm registry.
 */
export async function localCaCertificates(
  dir = '/usr/local/share/ca-certificates',
): Promise<string | undefined> {
  const names = await readdir(dir).catch(() => [] as string[]);
  const pems: string[] = [];
  for (const n of names.filter((x) => x.endsWith('.crt')).sort()) {
    const text = await readFile(join(dir, n), 'utf8').catch(() => '');
    if (text.includes('-----BEGIN CERTIFICATE-----')) pems.push(text.trim());
  }
  return pems.length > 0 ? `${pems.join('\n')}\n` : undefined;
}

/** Names, modes and bytes of every file under `dir`, in a stable order. */
async function hashTree(hash: ReturnType<typeof createHash>, dir: string): Promise<void> {
  const walk = async (d: string): Promise<void> => {
    const entries = (await readdir(d, { withFileTypes: true })).sort((a, b) => (a.name < b.name ? -1 : 1));
    for (const e of entries) {
      const p = join(d, e.name);
      if (e.isDirectory()) await walk(p);
      else {
        const s = await stat(p);
        hash.update(`${relative(dir, p)}\0${s.mode & 0o111 ? 'x' : '-'}\0`);
        hash.update(await readFile(p));
      }
    }
  };
  await walk(dir).catch((err: NodeJS.ErrnoException) => {
    throw new PackfarmError('BUILDER_NOT_FOUND', `${dir}: a buildpack of the default builder: ${err.code}`, {
      cause: err,
    });
  });
}
