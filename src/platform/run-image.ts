import { parseReference } from '../oci/reference.js';
import { PackfarmError } from '../util/errors.js';
import { EXIT } from './exit-codes.js';
import type { RunFile } from './files.js';

/** The run image chosen for a build, and the run.toml entry it came from (recorded in the image's label). */
export interface SelectedRunImage {
  /** The reference to read: the entry's image or one of its mirrors. */
  reference: string;
  /** The entry's `image` and `mirrors` (what the app image's label records as its run image). */
  image: string;
  mirrors: string[];
}

/** Whether a reference can be read with the credentials at hand (false on "not found" and "denied" alike). */
export type ReadAccessCheck = (reference: string) => Promise<boolean>;

/**
 * Pick the run image from run.toml (platform.md "analyzer"; the reference lifecycle's mirror choice): entries
 * in order; within an entry, its image and mirrors on the output image's registry first, then the rest in
 * order; the first readable one wins. An entry with nothing readable gives way to the next entry (the
 * reference stops at the first entry; packfarm goes on, see spec/lifecycle.md). Nothing readable at all
 * fails with the reference's meaning and exit code: inputs could not be resolved (3).
 */
export async function selectRunImage(opts: {
  run: RunFile;
  runPath: string;
  /** The output image: its registry is preferred among mirrors. */
  outputImage: string;
  canRead: ReadAccessCheck;
}): Promise<SelectedRunImage> {
  if (opts.run.images.length === 0)
    throw new PackfarmError(
      'RUN_IMAGE_MISSING',
      `-run-image is required when there is no run metadata available (${opts.runPath} lists no [[images]])`,
      {
        exitCode: EXIT.INVALID_ARGS,
        hint: 'pass -run-image REF (CNB_RUN_IMAGE) or give a run.toml with [[images]] (-run, CNB_RUN_PATH)',
      },
    );
  const outputRegistry = registryOf(opts.outputImage);
  const tried: string[] = [];
  for (const entry of opts.run.images) {
    const names = [entry.image, ...(entry.mirrors ?? [])];
    const sameRegistry = names.filter(
      (n) => outputRegistry !== undefined && registryOf(n) === outputRegistry,
    );
    const ordered = [...sameRegistry, ...names.filter((n) => !sameRegistry.includes(n))];
    for (const name of ordered) {
      if (tried.includes(name)) continue;
      tried.push(name);
      if (await opts.canRead(name).catch(() => false))
        return { reference: name, image: entry.image, mirrors: entry.mirrors ?? [] };
    }
  }
  throw new PackfarmError(
    'RUN_IMAGE_INACCESSIBLE',
    `failed to find accessible run image: none of ${tried.join(', ')} (${opts.runPath}) can be read`,
    {
      exitCode: EXIT.INVALID_ARGS,
      hint: 'check that the run image exists and that the registry credentials allow pulling it',
    },
  );
}

function registryOf(reference: string): string | undefined {
  try {
    return parseReference(reference).registry;
  } catch {
    return undefined;
  }
}
