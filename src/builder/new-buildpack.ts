import { mkdir, readdir, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { isApiSupported } from '../util/api-version.js';
import { SUPPORTED_BUILDPACK_APIS } from '../buildpack/api.js';
import { formatPlatform, parsePlatform } from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';
import { stringifyToml } from '../util/toml.js';

/**
 * `packfarm buildpack new`: a minimal buildpack to start from, as pack's `buildpack new` makes one, with
 * POSIX sh scripts (they run on any build image with /bin/sh): bin/detect passes, bin/build says it ran.
 */
export async function newBuildpack(opts: {
  id: string;
  dir: string;
  api: string;
  version: string;
  targets?: string[];
}): Promise<string> {
  if (!/^[a-zA-Z0-9./_-]+$/.test(opts.id) || ['app', 'config', 'sbom'].includes(opts.id))
    throw new PackfarmError('INVALID_ARGS', `buildpack id "${opts.id}" is not valid`, {
      hint: 'use letters, digits, ".", "/", "-" and "_", e.g. acme/hello (app, config and sbom are reserved)',
    });
  if (!isApiSupported(opts.api, SUPPORTED_BUILDPACK_APIS))
    throw new PackfarmError('INVALID_ARGS', `--api: ${opts.api} is not a Buildpack API packfarm supports`, {
      hint: `use one of ${SUPPORTED_BUILDPACK_APIS.join(', ')}`,
    });
  const dir = resolve(opts.dir);
  const existing = await readdir(dir).catch(() => [] as string[]);
  if (existing.length > 0)
    throw new PackfarmError('INVALID_ARGS', `${dir} exists and is not empty`, {
      hint: 'choose another --path',
    });
  const targets = (opts.targets ?? ['linux/amd64', 'linux/arm64']).map((t) => parsePlatform(t, '--targets'));
  const toml = stringifyToml({
    api: opts.api,
    buildpack: { id: opts.id, version: opts.version },
    targets: targets.map((t) => ({
      os: t.os,
      arch: t.architecture,
      ...(t.variant ? { variant: t.variant } : {}),
    })),
  });
  await mkdir(join(dir, 'bin'), { recursive: true });
  await writeFile(join(dir, 'buildpack.toml'), toml);
  await writeFile(
    join(dir, 'bin', 'detect'),
    '#!/bin/sh\nset -eu\n# Exit 0 to take part in the build, 100 to stay out.\nexit 0\n',
    {
      mode: 0o755,
    },
  );
  await writeFile(
    join(dir, 'bin', 'build'),
    `#!/bin/sh\nset -eu\n# CNB_LAYERS_DIR: where this buildpack's layers go; CNB_PLATFORM_DIR, CNB_BP_PLAN_PATH: its inputs.\necho "---> ${opts.id} ${opts.version} (${targets.map(formatPlatform).join(', ')})"\n`,
    { mode: 0o755 },
  );
  return dir;
}
