import type { z } from 'zod';
import { type BaseImage, readBaseImage } from '../image/read.js';
import { runnableChildren } from '../image/read.js';
import type { ImageStore } from '../image/store.js';
import {
  type ImageLocation,
  type OpenImageOptions,
  appImageLocation,
  displayImageLocation,
  openImage,
} from '../image/transport.js';
import type { Digest } from '../oci/digest.js';
import { isIndexMediaType } from '../oci/media-types.js';
import { formatPlatform, platformFromSpec } from '../oci/platform.js';
import { ImageIndexSchema } from '../oci/schemas.js';
import { BuildMetadataSchema, Label, LifecycleMetadataSchema } from '../platform/labels.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { parseJson, parseWith } from '../util/validate.js';
import type { ErrorCode } from '../util/error-codes.js';

/**
 * `packfarm inspect`: what a CNB app image says about itself, read from its labels and config (never its
 * layers). The JSON shape of these types is documented in spec/inspect.md; keep the two in step.
 */

/** One app image (a manifest): every field is always present, null when the image does not say. */
export interface AppImageDetails {
  /** os/arch[/variant] of the image (for an index child: as its descriptor declares it). */
  platform: string;
  digest: Digest;
  mediaType: string;
  /** Manifest size in bytes. */
  size: number;
  created: string | null;
  /** Whether the image carries the lifecycle's labels at all. */
  cnb: boolean;
  /** `io.buildpacks.stack.id` (images of Platform API < 0.12 builds). */
  stack: string | null;
  target: {
    os: string;
    arch: string;
    variant: string | null;
    /** `io.buildpacks.base.distro.name` / `.version`. */
    distro: { name: string; version: string | null } | null;
    /** `io.buildpacks.base.id`. */
    baseId: string | null;
  };
  /** The run image the app was built on, from `io.buildpacks.lifecycle.metadata`. */
  runImage: {
    reference: string | null;
    topLayer: string | null;
    image: string | null;
    mirrors: string[];
  } | null;
  /** `io.buildpacks.rebasable` (absent = true, as the rebaser reads it); false without CNB labels. */
  rebasable: boolean;
  buildpacks: Array<{ id: string; version: string; homepage: string | null }>;
  processes: AppProcess[];
  /** The launch SBOM layer recorded in the lifecycle label. */
  sbom: { diffId: string } | null;
  /** The legacy BOM of `io.buildpacks.build.metadata` (`inspect --bom`; empty since Platform API 0.9). */
  bom: unknown[];
}

export interface AppProcess {
  type: string;
  command: string[];
  args: string[];
  default: boolean;
  /** Absolute, as the process starts: its own working dir, else the image's. */
  workingDir: string;
  buildpackId: string | null;
}

export type AppImageResult =
  | ({ kind: 'image' } & AppImageDetails)
  | { kind: 'index'; digest: Digest; mediaType: string; size: number; images: AppImageDetails[] };

export interface AppInspectSection {
  /** Where it was looked for: `oci:/dir:tag` or a registry reference. */
  location: string;
  present: boolean;
  /** Why the image could not be read (anything other than "not there"). */
  error: { code: ErrorCode; message: string; hint: string | null; exitCode: number } | null;
  result: AppImageResult | null;
}

export interface AppInspectReport {
  /** IMAGE as given. */
  image: string;
  /** The default local layout (or the oci: location given). */
  local: AppInspectSection;
  /** The registry; null for an oci: IMAGE. */
  remote: AppInspectSection | null;
}

export interface InspectAppOptions extends OpenImageOptions {
  /** For the default local layout (PACKFARM_HOME …); default process.env. */
  env?: NodeJS.ProcessEnv;
}

/** Errors that mean "there is no such image here", shown as "(not present)" rather than as a failure. */
const ABSENT_CODES = new Set(['MANIFEST_UNKNOWN', 'NAME_UNKNOWN', 'LAYOUT_NOT_FOUND']);

/**
 * Inspect IMAGE in both places `pack inspect` looks: the local store (the default local layout for a bare
 * reference) and the registry. An `oci:` IMAGE is only looked at where it says. A place that fails for a
 * reason other than absence records the error; the caller decides what to do when nothing was found.
 */
export async function inspectApp(text: string, opts: InspectAppOptions = {}): Promise<AppInspectReport> {
  const local = appImageLocation(text, { publish: false, ...(opts.env ? { env: opts.env } : {}) });
  const remote = appImageLocation(text, { publish: true, ...(opts.env ? { env: opts.env } : {}) });
  const [localSection, remoteSection] = await Promise.all([
    inspectSection(local, opts),
    remote.transport === 'docker' ? inspectSection(remote, opts) : Promise.resolve(null),
  ]);
  return { image: text, local: localSection, remote: remoteSection };
}

async function inspectSection(loc: ImageLocation, opts: OpenImageOptions): Promise<AppInspectSection> {
  const location = displayImageLocation(loc);
  try {
    const opened = await openImage(loc, opts);
    const result = await inspectAppImage(opened.store, opened.target);
    return { location, present: true, error: null, result };
  } catch (err) {
    if (isPackfarmError(err) && ABSENT_CODES.has(err.code))
      return { location, present: false, error: null, result: null };
    if (isPackfarmError(err))
      return {
        location,
        present: false,
        error: { code: err.code, message: err.message, hint: err.hint ?? null, exitCode: err.exitCode },
        result: null,
      };
    throw err;
  }
}

/** The app image (or every runnable child of the index) that `target` names in `store`. */
export async function inspectAppImage(store: ImageStore, target: string): Promise<AppImageResult> {
  const top = await store.getManifest(target);
  if (!isIndexMediaType(top.mediaType)) {
    const base = await readBaseImage(store, top.digest);
    return { kind: 'image', ...describeAppImage(base, formatPlatform(base.platform)) };
  }
  const source = `${store.description}@${top.digest}`;
  const index = parseWith(ImageIndexSchema, parseJson(top.bytes.toString('utf8'), source), source);
  const images: AppImageDetails[] = [];
  for (const child of runnableChildren(index)) {
    const base = await readBaseImage(store, child.digest);
    images.push(describeAppImage(base, formatPlatform(platformFromSpec(child.platform!))));
  }
  return { kind: 'index', digest: top.digest, mediaType: top.mediaType, size: top.bytes.length, images };
}

/** What the labels and config of one image say; `platform` as it should be shown. */
export function describeAppImage(base: BaseImage, platform: string): AppImageDetails {
  const source = `${base.store.description}@${base.digest}`;
  const cfg = base.config.config ?? {};
  const labels = cfg.Labels ?? {};
  const lifecycle = readJsonLabel(labels, Label.lifecycleMetadata, LifecycleMetadataSchema, source);
  const build = readJsonLabel(labels, Label.buildMetadata, BuildMetadataSchema, source);
  const cnb = lifecycle !== undefined || build !== undefined;

  const env = new Map(
    (cfg.Env ?? []).map((e) => {
      const eq = e.indexOf('=');
      return eq < 0 ? [e, ''] : [e.slice(0, eq), e.slice(eq + 1)];
    }),
  );
  const imageWorkDir = cfg.WorkingDir || env.get('CNB_APP_DIR') || '/';
  const appDir = env.get('CNB_APP_DIR') || imageWorkDir;
  const entrypointType = /^\/cnb\/process\/(.+)$/.exec(cfg.Entrypoint?.[0] ?? '')?.[1];
  const anyMarked = (build?.processes ?? []).some((p) => p.default === true);
  const processes: AppProcess[] = (build?.processes ?? []).map((p) => {
    const wd = p['working-dir'];
    return {
      type: p.type,
      command: p.command,
      args: p.args,
      // packfarm marks the default process in the label; the reference lifecycle makes it the entrypoint.
      default: anyMarked ? p.default === true : p.type === entrypointType,
      workingDir: !wd ? imageWorkDir : wd.startsWith('/') ? wd : `${appDir.replace(/\/+$/, '')}/${wd}`,
      buildpackId: p.buildpackID || null,
    };
  });

  const run = lifecycle?.runImage;
  const legacy = lifecycle?.stack?.runImage;
  const runImageName = run?.image || legacy?.image || null;
  const mirrors = run?.mirrors ?? legacy?.mirrors ?? [];
  const distroName = labels[Label.distroName];
  return {
    platform,
    digest: base.digest,
    mediaType: base.mediaType,
    size: base.manifestBytes.length,
    created: base.config.created ?? null,
    cnb,
    stack: labels[Label.stackId] || null,
    target: {
      os: base.platform.os,
      arch: base.platform.architecture,
      variant: base.platform.variant ?? null,
      distro: distroName ? { name: distroName, version: labels[Label.distroVersion] || null } : null,
      baseId: labels[Label.baseId] || null,
    },
    runImage: lifecycle
      ? {
          reference: run?.reference || null,
          topLayer: run?.topLayer || null,
          image: runImageName,
          mirrors: [...mirrors],
        }
      : null,
    rebasable: cnb && labels[Label.rebasable] !== 'false',
    buildpacks: (build?.buildpacks ?? []).map((b) => ({
      id: b.id,
      version: b.version,
      homepage: b.homepage || null,
    })),
    processes,
    sbom: lifecycle?.sbom?.sha ? { diffId: lifecycle.sbom.sha } : null,
    bom: Array.isArray(build?.bom) ? build.bom : [],
  };
}

/**
 * A JSON label through its schema; undefined when the label is absent. A label that is not JSON, or not the
 * shape the lifecycle writes, is an error naming the image and the label.
 */
export function readJsonLabel<S extends z.ZodType>(
  labels: Record<string, string>,
  key: string,
  schema: S,
  image: string,
): z.output<S> | undefined {
  const raw = labels[key];
  if (raw === undefined || raw === '') return undefined;
  const source = `${image}: label ${key}`;
  const hint = 'the label was not written by a CNB lifecycle (or was edited); rebuild the image';
  try {
    return parseWith(schema, parseJson(raw, source), source, 'INVALID_LABEL');
  } catch (err) {
    if (isPackfarmError(err)) throw new PackfarmError('INVALID_LABEL', err.message, { hint, cause: err });
    throw err;
  }
}
