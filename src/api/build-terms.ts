import { cp, mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { PackfarmError } from '../util/errors.js';
import { pathExists } from '../util/fs.js';
import type { Logger } from '../util/log.js';

/**
 * `packfarm build`'s own spelling of things the phases and pack-style flags touch: phase errors in the
 * build's flag names, `--tag` destinations, options an executor cannot honour, and the `--sbom-output-dir` /
 * `--report-output-dir` copies.
 */

/** Lifecycle flags that `packfarm build` spells its own way (the phases' messages name the lifecycle's). */
const BUILD_FLAG_NAMES: Array<[RegExp, string]> = [
  [/(^|[\s("'`])-(run-image|previous-image|cache-image|cache-dir|gid|uid|platform)\b/g, '$1--$2'],
  [/ \(or run\.toml\)/g, " (or the builder's run image)"],
];

/** A phase's error in `build`'s words: its flag names in the message and the hint. */
export function inBuildTerms(err: unknown): unknown {
  if (!(err instanceof PackfarmError)) return err;
  const rewrite = (t: string) => BUILD_FLAG_NAMES.reduce((acc, [re, to]) => acc.replace(re, to), t);
  const message = rewrite(err.message);
  const hint = err.hint === undefined ? undefined : rewrite(err.hint);
  if (message === err.message && hint === err.hint) return err;
  return new PackfarmError(err.code, message, {
    ...(hint !== undefined ? { hint } : {}),
    exitCode: err.exitCode,
    cause: err,
  });
}

/**
 * A bare `--tag REF` beside an `oci:` IMAGE would land in the default local layout, a place the user never
 * named: refuse it and say how to put the tag where it is meant to go.
 */
export function checkTagDestination(image: string, tag: string, publish: boolean): void {
  if (publish || !image.startsWith('oci:') || tag.startsWith('oci:')) return;
  throw new PackfarmError(
    'INVALID_ARGS',
    `--tag ${tag}: IMAGE ${image} is an OCI layout, and a bare --tag without --publish would go to the default local layout instead`,
    {
      hint: `give the tag as a layout location (e.g. --tag ${image.replace(/:[^:/]*$/, '')}:v2, or another oci:DIR:TAG), or add --publish to tag in a registry`,
    },
  );
}

/**
 * Options only a container executor can honour, checked against the executor that runs the buildpacks. The
 * host executor runs them as child processes on this machine: they already use its network (so `host` is
 * what they get) and see its filesystem as it is, so `none` and volumes would be false promises. The oci
 * executor honours both: the network (host or none) and volumes (bind mounts, spec/exec.md).
 */
export function checkExecutorOptions(
  opts: { network?: string | undefined; volumes: readonly { host: string; target: string }[] },
  executor: 'host' | 'oci',
  log: Logger,
): void {
  if (executor === 'host' && opts.network === 'none')
    throw new PackfarmError(
      'EXECUTOR_UNSUPPORTED',
      `--network none: the ${executor} executor runs buildpacks as processes on this machine and cannot cut them off the network`,
      {
        hint: 'drop --network none, or build in a build image (--builder image or --build-image, oci executor)',
      },
    );
  if (executor === 'host' && opts.network === 'host')
    log.info(`--network host: buildpacks run on this machine (${executor} executor) and use its network`);
  const v = opts.volumes[0];
  if (v && executor === 'host')
    throw new PackfarmError(
      'EXECUTOR_UNSUPPORTED',
      `--volume ${v.host}:${v.target}: the host executor runs buildpacks on this machine, with nothing mounted at ${v.target}`,
      {
        hint: 'buildpacks run by the host executor read host paths directly: drop --volume, or pass the path with --env; or build in a build image (oci executor)',
      },
    );
}

/** --sbom-output-dir and --report-output-dir: copies out of the layers dir before it is cleaned up. */
export async function copyBuildOutputs(
  opts: { sbomOutputDir?: string | undefined; reportOutputDir?: string | undefined },
  layersDir: string,
  cwd: string,
): Promise<void> {
  if (opts.sbomOutputDir) {
    const dest = resolve(cwd, opts.sbomOutputDir);
    await mkdir(dest, { recursive: true });
    const src = join(layersDir, 'sbom');
    if (await pathExists(src)) await cp(src, join(dest, 'sbom'), { recursive: true });
  }
  if (opts.reportOutputDir) {
    const dest = resolve(cwd, opts.reportOutputDir);
    await mkdir(dest, { recursive: true });
    await cp(join(layersDir, 'report.toml'), join(dest, 'report.toml'));
  }
}
