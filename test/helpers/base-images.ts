import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type BaseImagesResult, createBaseImages } from '../../src/builder/base/create.js';
import { resolveBaseDefinition } from '../../src/builder/base/definition.js';

/**
 * Real Debian 12 build and run images for tests, per architecture, through `createBaseImages` (what
 * `packfarm base create` runs): a small package set by default (dash and coreutils, so containers have a shell
 * and `uname`), the package lists and .debs cached under `<OS temp>/packfarm-test-base-cache` across test files
 * and runs. `buildTag`/`runTag` are registry references or `oci:DIR[:TAG]`. The first call for an architecture
 * downloads ~10 MB from deb.debian.org; later calls only resolve (a few seconds) and write the layers.
 */
export const TEST_BASE_CACHE = join(tmpdir(), 'packfarm-test-base-cache');

export async function debianBaseImages(opts: {
  buildTag: string;
  runTag: string;
  /** OCI or Debian names (default ['amd64']). */
  arches?: string[];
  buildPackages?: string[];
  runPackages?: string[];
  insecureRegistries?: string[];
}): Promise<BaseImagesResult> {
  const definition = resolveBaseDefinition(
    {},
    {
      arch: opts.arches ?? ['amd64'],
      packages: opts.buildPackages ?? ['dash', 'coreutils'],
      runPackages: opts.runPackages ?? ['dash', 'coreutils'],
      essential: { build: false, run: false },
    },
    'test',
  );
  return createBaseImages({
    definition,
    buildTag: opts.buildTag,
    runTag: opts.runTag,
    dataDir: TEST_BASE_CACHE,
    ...(opts.insecureRegistries ? { insecureRegistries: opts.insecureRegistries } : {}),
  });
}
