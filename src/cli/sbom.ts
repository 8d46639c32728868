import type { Command } from 'commander';
import { insecureRegistriesFrom } from '../image/transport.js';
import { parsePlatform } from '../oci/platform.js';
import { type CliIO, collect, INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP } from './output.js';

/** `packfarm sbom download IMAGE`: pack's `sbom download`. */
export function registerSbomCommands(program: Command, io: CliIO): void {
  const sbom = program.command('sbom').description('Software bill of materials of CNB app images');
  sbom
    .command('download')
    .description(
      "Write the image's launch SBOM layer to a directory (files land in <dir>/layers/sbom/launch/<buildpack>/…)",
    )
    .argument('<image>', 'REF (the local layout, or the registry with --remote) or oci:DIR[:TAG]')
    .option('-o, --output-dir <dir>', 'where to write the SBOM files', '.')
    .option('--remote', 'read the image from its registry instead of the local layout')
    .option('--platform <os/arch[/variant]>', "for an index: which image's SBOM (default: this machine's)")
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect)
    .option('--json', 'print the result as JSON')
    .action(
      async (
        image: string,
        o: {
          outputDir: string;
          remote?: boolean;
          platform?: string;
          insecureRegistry?: string[];
          json?: boolean;
        },
      ) => {
        const result = await (await import('../api/sbom.js')).downloadAppSbom(image, {
          destDir: o.outputDir,
          remote: o.remote === true,
          insecureRegistries: insecureRegistriesFrom(o.insecureRegistry),
          ...(o.platform ? { platform: parsePlatform(o.platform, '--platform') } : {}),
        });
        if (o.json) {
          io.out(JSON.stringify(result, null, 2));
          return;
        }
        io.out(
          [
            `SBOM of ${result.image} (${result.platform}, ${result.digest})`,
            `written to ${result.destDir}: ${result.files.length} file${result.files.length === 1 ? '' : 's'}`,
            ...result.files.map((f) => `  ${f}`),
          ].join('\n'),
        );
      },
    );
}
