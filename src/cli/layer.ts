import type { Command } from 'commander';
import { writeLayer } from '../archive/index.js';
import { PackfarmError } from '../util/errors.js';
import { resolveCreationTime } from '../util/time.js';
import type { CliIO } from './output.js';

function parseId(value: string, flag: string): number {
  if (!/^\d+$/.test(value)) {
    throw new PackfarmError('INVALID_ARGS', `${flag}: "${value}" is not a numeric id`, {
      hint: 'expected a non-negative integer such as 0 or 1000',
    });
  }
  return Number(value);
}

/** `packfarm layer create`: a deterministic layer blob from a directory, with its digests. */
export function registerLayerCommands(program: Command, io: CliIO): void {
  const layer = program.command('layer').description('Build deterministic OCI layers');
  layer
    .command('create')
    .description('Write DIR as a reproducible tar+gzip layer and print its digest, diffID and size')
    .argument('<dir>', 'directory whose contents become the layer')
    .requiredOption('-o, --output <file>', 'where to write the layer blob (written atomically)')
    .option('--prefix <path>', 'place the entries under this path, e.g. workspace')
    .option('--uid <n>', 'owner uid of every entry', '0')
    .option('--gid <n>', 'owner gid of every entry', '0')
    .option(
      '--creation-time <now|unix>',
      'mtime of every entry (default SOURCE_DATE_EPOCH or 1980-01-01T00:00:01Z)',
    )
    .option('--uncompressed', 'write a plain tar (digest equals diffID)')
    .option('--json', 'print the result as JSON')
    .action(
      async (
        dir: string,
        o: {
          output: string;
          prefix?: string;
          uid: string;
          gid: string;
          creationTime?: string;
          uncompressed?: boolean;
          json?: boolean;
        },
      ) => {
        const skipped: string[] = [];
        const result = await writeLayer({
          dir,
          out: o.output,
          uid: parseId(o.uid, '--uid'),
          gid: parseId(o.gid, '--gid'),
          mtime: resolveCreationTime(o.creationTime),
          compression: o.uncompressed ? 'none' : 'gzip',
          onSkip: (e) => skipped.push(`${e.path} (${e.kind})`),
          ...(o.prefix ? { prefix: o.prefix } : {}),
        });
        if (o.json) {
          io.out(JSON.stringify({ file: o.output, ...result, skipped }));
          return;
        }
        for (const s of skipped) io.err(`warning: left out ${s}: not a file, directory or link`);
        io.out(
          [
            `layer:   ${o.output}`,
            `digest:  ${result.digest}`,
            `diffID:  ${result.diffId}`,
            `size:    ${result.size} bytes (${result.uncompressedSize} uncompressed)`,
            `entries: ${result.entries}`,
          ].join('\n'),
        );
      },
    );
}
