import type { Command } from 'commander';
import {
  type OpenedImage,
  appImageLocation,
  formatImageLocation,
  insecureRegistriesFrom,
  openImage,
  parseImageLocation,
} from '../image/transport.js';
import type { RebaseImageRef, RebaseResult } from '../phase/rebase.js';
import { PackfarmError } from '../util/errors.js';
import { createLogger } from '../util/log.js';
import { type CliIO, collect, INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP } from './output.js';

interface RebaseFlags {
  runImage?: string;
  publish?: boolean;
  force?: boolean;
  insecureRegistry?: string[];
  json?: boolean;
}

/**
 * The name recorded in the label for a run image given on the command line: a registry reference as written
 * (without `docker://`), a layout as `oci:<absolute dir>[:tag]`.
 */
function runImageName(text: string): string {
  const loc = parseImageLocation(text, '--run-image');
  if (loc.transport === 'oci') return formatImageLocation(loc);
  return text.startsWith('docker://') ? text.slice('docker://'.length) : text;
}

function asRef(o: OpenedImage, name: string): RebaseImageRef {
  return { store: o.store, target: o.target, name };
}

/** `packfarm rebase IMAGE`: put an app image (or every platform of an index) on a new run image. */
export function registerRebaseCommand(program: Command, io: CliIO): void {
  program
    .command('rebase')
    .description(
      'Swap the run-image layers under an app image (or each platform of an index) for a newer run image, ' +
        'editing manifest and config only',
    )
    .argument(
      '<image>',
      'the app image: oci:DIR[:TAG], or a reference (a registry with --publish, else the local layout store)',
    )
    .option('--run-image <ref>', 'the new run image (default: the run image recorded in the app image)')
    .option('--publish', 'IMAGE is in a registry (rebased and tagged there)')
    .option(
      '--force',
      'rebase even when targets differ, the image is not rebasable or the run image is another',
    )
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect)
    .option('--json', 'print the result as JSON')
    .action(async (imageText: string, o: RebaseFlags) => {
      const insecureRegistries = insecureRegistriesFrom(o.insecureRegistry);
      const appLocation = appImageLocation(imageText, { publish: o.publish === true });
      // A bare reference without --publish is the local layout; when it is not there, the image is most
      // likely in the registry, which rebase only touches with --publish.
      const localOnly = !o.publish && !imageText.startsWith('oci:');
      const notLocal = () =>
        new PackfarmError(
          'IMAGE_NOT_FOUND',
          `${imageText} is not in the local layout ${formatImageLocation(appLocation)}`,
          { hint: `to rebase it in its registry, add --publish: packfarm rebase ${imageText} --publish` },
        );
      const app = await openImage(appLocation, { insecureRegistries }).catch((err: unknown) => {
        throw localOnly ? notLocal() : err;
      });
      if (localOnly && !(await app.store.resolve(app.target))) throw notLocal();
      const open = async (name: string) => asRef(await openImage(name, { insecureRegistries }), name);
      const runImage = o.runImage ? await open(o.runImage) : undefined;
      if (runImage && o.runImage) runImage.name = runImageName(o.runImage);
      // The summary goes to stdout; stderr only carries warnings (e.g. index children that were dropped).
      const logger = createLogger({
        level: 'warn',
        write: (l) => io.err(l),
        ...(o.json ? { json: true } : {}),
      });
      const result = await (await import('../phase/rebase.js')).rebase({
        source: { store: app.store, target: app.target, name: app.display },
        ...(runImage ? { runImage } : { openRunImage: open }),
        force: o.force === true,
        logger,
      });
      if (o.json) {
        io.out(JSON.stringify({ image: app.display, ...result }, null, 2));
        return;
      }
      io.out(describe(app.display, result));
    });
}

function describe(image: string, r: RebaseResult): string {
  const lines = [
    `Rebased ${image}${r.kind === 'index' ? ` (index of ${r.images.length} image(s))` : ''}`,
    `  digest: ${r.digest}`,
  ];
  for (const i of r.images) {
    const moved = `${i.blobs.mounted} mounted, ${i.blobs.uploaded} copied, ${i.blobs.exists} already there`;
    lines.push(
      `  ${i.platform}: ${i.digest}`,
      `    run image ${i.runImage.reference}`,
      `    ${i.baseLayers.removed} run-image layer(s) → ${i.baseLayers.added}; ${i.appLayers} app layer(s) kept; blobs ${moved}`,
    );
  }
  for (const d of r.dropped) lines.push(`  dropped ${d.digest}: ${d.reason}`);
  return lines.join('\n');
}
