import { createHash } from 'node:crypto';
import { mkdir, readFile, readdir, rm, stat, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { packfarmDataDir } from '../image/data-dir.js';
import { buildIndex } from '../image/index-list.js';
import { openLayoutStore } from '../image/layout-store.js';
import { sha256Digest } from '../oci/digest.js';
import {
  type Platform,
  formatPlatform,
  parsePlatform,
  platformToSpec,
  platformsEqual,
} from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';
import { pathExists, writeFileAtomic } from '../util/fs.js';
import { type HeldLock, type LockOwner, acquireLock } from '../util/lock.js';
import { parseToml, stringifyToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';
import { basePlatform, createBaseImages } from './base/create.js';
import { loadBaseDefinition } from './base/definition.js';
import { createBuilder } from './create.js';

/**
 * packfarm's default builder (builders/default/): what `packfarm build` uses when nothing names buildpacks.
 * It is made lazily, per platform, for the platforms a build asks for — `base create` from base.toml for that
 * one architecture, then `builder create` from builder.toml with its build and run images pointed at those
 * bases and its targets cut down to that platform — under `<data dir>/default-builder/<hash>/`, where <hash>
 * covers builder.toml, base.toml, every file of the buildpacks builder.toml names and packfarm's version:
 *
 *   base/            OCI layout: tags build-<os>-<arch>[-<variant>] and run-<…>, one single-platform index each
 *   builder/         OCI layout: tag <os>-<arch>[-<variant>] per platform (one builder image), and per set of
 *                    platforms asked for together, tag <p1>_<p2>… (an index over those platforms' images)
 *   ready-<platform> written last (temp + rename): that platform's base and builder images are complete
 *   <platform>.lock  held while that platform is being made (util/lock.ts)
 *
 * A platform with its ready marker is used as it is; editing a definition or a shipped buildpack gives a new
 * hash, hence new builders. Each platform is made under its own lock, so two processes wanting the same
 * platform make it once (the other waits, bounded, saying so) while different platforms are made in parallel;
 * a lock whose holder died is taken over and the half-made platform redone.
 */

/** builders/ and buildpacks/ ship with the package: two levels up from src/builder/ or dist/builder/. */
export const SHIPPED_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface DefaultBuilderOptions {
  env?: NodeJS.ProcessEnv;
  /** The definitions (default: <package>/builders/default). */
  definitionsDir?: string;
  /**
   * The platforms the build asks for (each must be one of builder.toml's [[targets]]); default: every target
   * of builder.toml. Only these are made, and the reference covers exactly these.
   */
  platforms?: readonly Platform[];
  insecureRegistries?: string[];
  /** Where `base create` keeps apt state and .debs (default: the data dir). */
  baseCacheDir?: string;
  /** How long to wait for another process making a platform we need (default 30 min). */
  waitTimeoutMs?: number;
  /** Progress lines (first use of a platform takes minutes: Debian packages and its builder image). */
  onProgress?: (message: string) => void;
}

export interface DefaultBuilder {
  /** `oci:<dir>:<tag>`: the builder image (one platform) or index (several) to pass as --builder. */
  reference: string;
  /** The platforms it covers, in the order of builder.toml's targets. */
  platforms: Platform[];
  /** Whether this call made any platform (false: all were cached). */
  created: boolean;
  /** The platforms this call made (`os/arch[/variant]`). */
  made: string[];
  hash: string;
}

export interface DefaultBuilderLocation {
  hash: string;
  home: string;
  /** The OCI layouts of the base images and of the builder images. */
  baseLayout: string;
  builderLayout: string;
  builderToml: string;
  baseToml: string;
  buildpackDirs: string[];
  toml: Record<string, unknown>;
  /** builder.toml's [[targets]]: the platforms the default builder can be made for. */
  targets: Platform[];
}

const TargetsSchema = z.array(
  z.looseObject({ os: z.string().min(1), arch: z.string().min(1), variant: z.string().min(1).optional() }),
);

/** Where the default builder for these definitions lives, its content hash and its targets (no image is read). */
export async function defaultBuilderLocation(
  opts: Pick<DefaultBuilderOptions, 'env' | 'definitionsDir'> = {},
): Promise<DefaultBuilderLocation> {
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
  const targets = parseWith(
    TargetsSchema,
    toml.targets ?? [],
    `${builderToml}: targets`,
    'INVALID_BUILDER_TOML',
  ).map((t, i) =>
    parsePlatform(
      [t.os, t.arch, ...(t.variant ? [t.variant] : [])].join('/'),
      `${builderToml}: targets[${i}]`,
    ),
  );
  if (targets.length === 0)
    throw new PackfarmError(
      'INVALID_BUILDER_TOML',
      `${builderToml}: targets: the default builder names no platform`,
      {
        hint: 'add [[targets]] entries (os = "linux", arch = "amd64" …)',
      },
    );

  const hash = createHash('sha256');
  // packfarm's own version too: a packfarm that writes builders differently makes its own. "-2": the lazy,
  // per-platform layout (the whole-builder layouts of "-1" are left alone).
  const pkg = JSON.parse(await readFile(join(SHIPPED_ROOT, 'package.json'), 'utf8')) as { version?: string };
  hash.update(`packfarm-default-builder-2 ${pkg.version ?? ''}\n`);
  hash.update(tomlText);
  hash.update(await readFile(baseToml));
  for (const dir of buildpackDirs) await hashTree(hash, dir);
  const key = hash.digest('hex').slice(0, 16);

  const home = join(packfarmDataDir(opts.env), 'default-builder', key);
  return {
    hash: key,
    home,
    baseLayout: join(home, 'base'),
    builderLayout: join(home, 'builder'),
    builderToml,
    baseToml,
    buildpackDirs,
    toml,
    targets,
  };
}

/** `linux/arm/v7` → `linux-arm-v7`: a platform as a tag and file name. */
export function platformSlug(p: Platform): string {
  return formatPlatform(p).replaceAll('/', '-');
}

const DEFAULT_WAIT_MS = 30 * 60_000;
/** How often a waiting process says it is still waiting. */
const WAIT_REPORT_MS = 15_000;

export async function defaultBuilder(opts: DefaultBuilderOptions = {}): Promise<DefaultBuilder> {
  const loc = await defaultBuilderLocation(opts);
  const platforms = choosePlatforms(loc, opts.platforms);
  const say = opts.onProgress ?? (() => {});
  const made: string[] = [];
  // One platform at a time, each under its own lock: never two locks held, so no deadlock between processes
  // asking for overlapping sets.
  for (const p of platforms) {
    const ready = join(loc.home, `ready-${platformSlug(p)}`);
    if (await pathExists(ready)) continue;
    await mkdir(loc.home, { recursive: true });
    const lock = await waitForLock(join(loc.home, `${platformSlug(p)}.lock`), p, opts, say);
    try {
      // Whoever held the lock may have made it meanwhile.
      if (await pathExists(ready)) {
        say(`default builder for ${formatPlatform(p)}: made by another packfarm process, using it`);
        continue;
      }
      await makePlatform(loc, p, ready, opts, say);
      made.push(formatPlatform(p));
    } finally {
      await lock.release();
    }
  }
  const reference = await composeReference(loc, platforms);
  return { reference, platforms, created: made.length > 0, made, hash: loc.hash };
}

/** The requested platforms as builder.toml names them (in its order), or every target; an error for others. */
function choosePlatforms(loc: DefaultBuilderLocation, wanted: readonly Platform[] | undefined): Platform[] {
  if (!wanted || wanted.length === 0) return [...loc.targets];
  const missing = wanted.filter((w) => !loc.targets.some((t) => platformsEqual(w, t)));
  if (missing.length > 0)
    throw new PackfarmError(
      'NO_MATCHING_PLATFORM',
      `the default builder (${loc.builderToml}) has no ${missing.map(formatPlatform).join(', ')}: its targets are ${loc.targets.map(formatPlatform).join(', ')}`,
      {
        hint: 'build only those platforms (--platform), or pass --builder with a builder that has the others',
      },
    );
  return loc.targets.filter((t) => wanted.some((w) => platformsEqual(w, t)));
}

/**
 * The platform's lock, waiting (up to waitTimeoutMs) while a live process holds it and saying so every
 * WAIT_REPORT_MS; a dead holder's lock is taken over (lock.ts). Held for minutes, so never stale by age.
 */
async function waitForLock(
  path: string,
  p: Platform,
  opts: DefaultBuilderOptions,
  say: (m: string) => void,
): Promise<HeldLock> {
  const limit = opts.waitTimeoutMs ?? DEFAULT_WAIT_MS;
  const started = Date.now();
  let step = 0;
  for (;;) {
    let holder: LockOwner | undefined;
    try {
      return await acquireLock(path, {
        timeoutMs: step,
        staleMs: Number.POSITIVE_INFINITY,
        busy: (owner) => {
          holder = owner;
          return new Error('busy');
        },
      });
    } catch (err) {
      if (!(err instanceof Error) || err.message !== 'busy') throw err;
    }
    const waited = Date.now() - started;
    const who = holder ? `pid ${holder.pid} on ${holder.host}` : 'another process';
    if (waited >= limit)
      throw new PackfarmError(
        'LOCK_TIMEOUT',
        `${path}: ${who} is still making the default builder for ${formatPlatform(p)} after ${Math.round(waited / 1000)} s`,
        { hint: `wait for it to finish and build again; if no packfarm process is running, delete ${path}` },
      );
    say(
      `waiting for ${who} to finish making the default builder for ${formatPlatform(p)} (${Math.round(waited / 1000)} s so far, up to ${Math.round(limit / 1000)} s)`,
    );
    step = Math.min(WAIT_REPORT_MS, limit - waited);
  }
}

/** Base images and the builder image for one platform, then its ready marker. Called holding its lock. */
async function makePlatform(
  loc: DefaultBuilderLocation,
  p: Platform,
  ready: string,
  opts: DefaultBuilderOptions,
  say: (m: string) => void,
): Promise<void> {
  const slug = platformSlug(p);
  const name = formatPlatform(p);
  say(`making the default builder for ${name} (first use; cached under ${loc.home})`);
  const all = await loadBaseDefinition(loc.baseToml);
  const arch = all.arches.find((a) => platformsEqual(basePlatform(a), p));
  if (!arch)
    throw new PackfarmError(
      'INVALID_BASE_DEFINITION',
      `${loc.baseToml}: architectures: ${name} is a target of ${loc.builderToml} but not an architecture of the base (${all.arches.map((a) => a.debian).join(', ')})`,
      { hint: `add "${p.architecture}" to architectures in ${loc.baseToml}, or remove the target` },
    );
  // A dead maker's scratch is this platform's alone (we hold its lock): start clean.
  const scratch = join(loc.home, `scratch-${slug}`);
  await rm(scratch, { recursive: true, force: true });
  await mkdir(scratch, { recursive: true });
  const buildRef = `oci:${loc.baseLayout}:build-${slug}`;
  const runRef = `oci:${loc.baseLayout}:run-${slug}`;
  const bases = await createBaseImages({
    definition: { ...all, arches: [arch] },
    buildTag: buildRef,
    runTag: runRef,
    dataDir: opts.baseCacheDir ?? packfarmDataDir(opts.env),
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
    onEvent: (e) => {
      if (e.type === 'image') say(`base ${e.kind} image ${e.platform}: ${e.packages} packages, ${e.digest}`);
      else if (e.type === 'warning') say(`warning: ${e.arch} ${e.kind}: ${e.message}`);
    },
  });

  // builder.toml as shipped, with absolute buildpack paths, this platform's bases and this target alone.
  const staged = {
    ...loc.toml,
    buildpacks: (loc.toml.buildpacks as Record<string, unknown>[]).map((b, i) => ({
      ...b,
      uri: loc.buildpackDirs[i],
    })),
    build: { ...(loc.toml.build as Record<string, unknown> | undefined), image: buildRef },
    run: { images: [{ image: runRef }] },
    targets: [{ os: p.os, arch: p.architecture, ...(p.variant ? { variant: p.variant } : {}) }],
  };
  const stagedToml = join(scratch, 'builder.toml');
  await writeFile(stagedToml, stringifyToml(staged));
  const builder = await createBuilder({
    image: `oci:${loc.builderLayout}:${slug}`,
    config: stagedToml,
    scratchDir: join(scratch, 'work'),
    onEvent: (e) => {
      if (e.type === 'target') say(`builder ${e.platform}: ${e.digest}`);
    },
  });
  await rm(scratch, { recursive: true, force: true });
  // The marker goes last: a platform whose maker died half-way is redone, never used.
  await writeFileAtomic(ready, `${builder.digest}\nbuild ${bases.build.digest}\nrun ${bases.run.digest}\n`);
  say(`default builder for ${name}: ${builder.digest}`);
}

/**
 * The reference covering exactly `platforms`: one platform's own tag, or the tag of an index over their
 * builder images (written when missing or different; its bytes depend only on the images, so processes
 * composing the same set at once write the same thing).
 */
async function composeReference(loc: DefaultBuilderLocation, platforms: Platform[]): Promise<string> {
  const store = await openLayoutStore(loc.builderLayout);
  const slugs = platforms.map(platformSlug);
  if (platforms.length === 1) return `oci:${loc.builderLayout}:${slugs[0]}`;
  const children = [];
  for (const [i, p] of platforms.entries()) {
    const d = await store.resolve(slugs[i]!);
    if (!d)
      throw new PackfarmError(
        'BUILDER_NOT_FOUND',
        `${loc.builderLayout}: no builder image tagged ${slugs[i]} although its ready marker is there`,
        { hint: `delete ${loc.home} so the default builder is made again` },
      );
    children.push({ mediaType: d.mediaType, digest: d.digest, size: d.size, platform: platformToSpec(p) });
  }
  const index = buildIndex(children);
  const tag = [...slugs].sort().join('_');
  if ((await store.resolve(tag))?.digest !== sha256Digest(index.bytes))
    await store.putManifest({ bytes: index.bytes, mediaType: index.mediaType, tag });
  return `oci:${loc.builderLayout}:${tag}`;
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
