import type { Command } from 'commander';
import type { IndexFormat } from '../image/index-list.js';
import {
  type LocalListChild,
  addToManifestList,
  annotateManifestList,
  createManifestList,
  deleteManifestList,
  inspectManifestList,
  pushManifestList,
  removeFromManifestList,
} from '../image/manifest-list.js';
import { insecureRegistriesFrom } from '../image/transport.js';
import { PackfarmError } from '../util/errors.js';
import type { CopyEvent } from '../image/copy.js';
import { parsePositiveInt, progressLine } from './image.js';
import {
  type CliIO,
  collect,
  formatBytes,
  writeRaw,
  INSECURE_REGISTRY_FLAG,
  INSECURE_REGISTRY_HELP,
} from './output.js';

/**
 * `packfarm manifest …`: local manifest lists (image indexes) assembled from images in registries or layouts,
 * then pushed. Lists are kept under the packfarm data dir (see src/image/manifest-list.ts).
 */
export function registerManifestCommands(program: Command, io: CliIO): void {
  const manifest = program
    .command('manifest')
    .description('Assemble multi-platform image indexes locally, then push them');

  const print: Printer = (json, data, human) => io.out(json ? JSON.stringify(data, null, 2) : human());
  for (const register of [
    registerCreateCommand,
    registerAddCommand,
    registerAnnotateCommand,
    registerInspectCommand,
    registerRmCommand,
    registerRemoveCommand,
    registerPushCommand,
  ])
    register(manifest, io, print);
}

/** Print `data` as JSON with --json, else the human text. */
type Printer = (json: boolean | undefined, data: unknown, human: () => string) => void;

function registerCreateCommand(manifest: Command, _io: CliIO, print: Printer): void {
  manifest
    .command('create')
    .description('Create a local manifest list, optionally adding images')
    .argument('<list>', 'the list name: the reference it will be pushed to, e.g. registry.example/app:1.0')
    .argument('[images...]', 'images to add (REF, docker://REF or oci:DIR[:TAG])')
    .option('--amend', 'add to the list if it already exists')
    .option('-f, --format <oci|docker>', 'index format to push (default oci)', parseFormat)
    .option('--annotations <key=value>', 'annotation on the index itself (repeatable)', collect)
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect)
    .option('--json', 'print JSON')
    .action(async (list: string, images: string[], o: CreateFlags) => {
      const result = await createManifestList(list, {
        images,
        amend: o.amend === true,
        ...(o.format ? { format: o.format } : {}),
        annotations: parseAnnotations(o.annotations ?? []),
        insecureRegistries: insecureRegistriesFrom(o.insecureRegistry),
      });
      print(o.json, result, () =>
        [`Created manifest list ${result.name}`, ...result.children.map(describeChild)].join('\n'),
      );
    });
}

function registerAddCommand(manifest: Command, _io: CliIO, print: Printer): void {
  manifest
    .command('add')
    .description('Add an image (or every image of an index) to a local list')
    .argument('<list>', 'the list name')
    .argument('<image>', 'REF, docker://REF or oci:DIR[:TAG]')
    .option('--os <os>', 'override the operating system')
    .option('--arch <arch>', 'override the architecture')
    .option('--variant <variant>', 'override the CPU variant')
    .option('--os-version <version>', 'set os.version')
    .option('--os-features <feature>', 'set os.features (repeatable)', collect)
    .option('--annotations <key=value>', 'annotation on the entry (repeatable)', collect)
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect)
    .option('--json', 'print JSON')
    .action(async (list: string, image: string, o: AddFlags) => {
      const result = await addToManifestList(list, image, {
        ...platformFlags(o),
        annotations: parseAnnotations(o.annotations ?? []),
        insecureRegistries: insecureRegistriesFrom(o.insecureRegistry),
      });
      print(o.json, result, () =>
        [`Added to ${result.list.name}:`, ...result.added.map(describeChild)].join('\n'),
      );
    });
}

function registerAnnotateCommand(manifest: Command, _io: CliIO, print: Printer): void {
  manifest
    .command('annotate')
    .description('Set the platform or annotations of an entry of a local list')
    .argument('<list>', 'the list name')
    .argument('<image>', 'the entry: the image as added, or its digest')
    .option('--os <os>', 'operating system')
    .option('--arch <arch>', 'architecture')
    .option('--variant <variant>', 'CPU variant')
    .option('--os-version <version>', 'os.version')
    .option('--os-features <feature>', 'os.features (repeatable)', collect)
    .option('--annotations <key=value>', 'annotation on the entry (repeatable)', collect)
    .option('--json', 'print JSON')
    .action(async (list: string, image: string, o: AddFlags) => {
      const result = await annotateManifestList(list, image, {
        ...platformFlags(o),
        annotations: parseAnnotations(o.annotations ?? []),
      });
      print(o.json, result, () => `Updated ${result.list.name}:\n${describeChild(result.entry)}`);
    });
}

function registerInspectCommand(manifest: Command, io: CliIO, _print: Printer): void {
  manifest
    .command('inspect')
    .description('Print the index exactly as it would be pushed')
    .argument('<list>', 'the list name')
    .option('-f, --format <oci|docker>', 'render in this format instead of the list’s own', parseFormat)
    .option('--raw', 'print the exact bytes that would be pushed (compact)')
    .action(async (list: string, o: { format?: IndexFormat; raw?: boolean }) => {
      const built = await inspectManifestList(list, o.format ? { format: o.format } : {});
      for (const w of built.warnings) io.err(`warning: ${w}`);
      if (o.raw) writeRaw(io, built.bytes);
      else io.out(JSON.stringify(built.document, null, 2));
    });
}

function registerRmCommand(manifest: Command, _io: CliIO, print: Printer): void {
  manifest
    .command('rm')
    .description('Remove entries from a local list')
    .argument('<list>', 'the list name')
    .argument('<images...>', 'entries: the image as added, or digests')
    .option('--json', 'print JSON')
    .action(async (list: string, images: string[], o: { json?: boolean }) => {
      const removed: LocalListChild[] = [];
      for (const image of images) removed.push(...(await removeFromManifestList(list, image)).removed);
      print(o.json, { removed }, () =>
        removed.map((c) => `Removed ${c.digest} (${c.source.image})`).join('\n'),
      );
    });
}

function registerRemoveCommand(manifest: Command, _io: CliIO, print: Printer): void {
  manifest
    .command('remove')
    .description('Delete local manifest lists (pushed images are not touched)')
    .argument('<lists...>', 'list names')
    .option('--json', 'print JSON')
    .action(async (lists: string[], o: { json?: boolean }) => {
      const deleted: string[] = [];
      for (const list of lists) deleted.push((await deleteManifestList(list)).name);
      print(o.json, { deleted }, () => deleted.map((n) => `Deleted manifest list ${n}`).join('\n'));
    });
}

function registerPushCommand(manifest: Command, io: CliIO, print: Printer): void {
  manifest
    .command('push')
    .description('Copy every image of a local list to the destination repository, then push the index')
    .argument('<list>', 'the list name')
    .argument('[destination]', 'where to push (default: the list name); REF or oci:DIR[:TAG]')
    .option('-f, --format <oci|docker>', 'index format (default: the list’s, else oci)', parseFormat)
    .option('--purge', 'delete the local list after a successful push')
    .option('--concurrency <n>', 'blob transfers at once', parsePositiveInt, 4)
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect)
    .option('--json', 'print the push report as JSON')
    .action(async (list: string, destination: string | undefined, o: PushFlags) => {
      const report = await pushManifestList(list, {
        ...(destination ? { destination } : {}),
        ...(o.format ? { format: o.format } : {}),
        purge: o.purge === true,
        concurrency: o.concurrency,
        insecureRegistries: insecureRegistriesFrom(o.insecureRegistry),
        ...(io.signal ? { signal: io.signal } : {}),
        ...(o.json ? {} : { onProgress: (e: CopyEvent) => io.err(progressLine(e)) }),
      });
      if (!o.json) for (const w of report.warnings) io.err(`warning: ${w}`);
      print(o.json, report, () => {
        const uploaded = report.children.reduce((n, c) => n + c.report.bytesUploaded, 0);
        const mounted = report.children.reduce((n, c) => n + c.report.blobs.mounted, 0);
        return [
          `Pushed ${report.destination} (${report.children.length} images)`,
          `  digest: ${report.digest}`,
          ...report.children.map((c) => `  ${(c.platform ?? '(no platform)').padEnd(16)} ${c.digest}`),
          `  blobs: ${formatBytes(uploaded)} uploaded, ${mounted} mounted`,
          ...(report.purged ? ['  local list deleted (--purge)'] : []),
        ].join('\n');
      });
    });
}

interface CreateFlags {
  amend?: boolean;
  format?: IndexFormat;
  annotations?: string[];
  insecureRegistry?: string[];
  json?: boolean;
}

interface AddFlags {
  os?: string;
  arch?: string;
  variant?: string;
  osVersion?: string;
  osFeatures?: string[];
  annotations?: string[];
  insecureRegistry?: string[];
  json?: boolean;
}

interface PushFlags {
  format?: IndexFormat;
  purge?: boolean;
  concurrency: number;
  insecureRegistry?: string[];
  json?: boolean;
}

function platformFlags(o: AddFlags) {
  return {
    ...(o.os !== undefined ? { os: o.os } : {}),
    ...(o.arch !== undefined ? { arch: o.arch } : {}),
    ...(o.variant !== undefined ? { variant: o.variant } : {}),
    ...(o.osVersion !== undefined ? { osVersion: o.osVersion } : {}),
    ...(o.osFeatures !== undefined ? { osFeatures: o.osFeatures } : {}),
  };
}

function parseFormat(value: string): IndexFormat {
  if (value === 'oci') return 'oci';
  if (value === 'docker' || value === 'v2s2') return 'docker';
  throw new PackfarmError('INVALID_ARGS', `--format: "${value}" is not a format (expected oci or docker)`);
}

/** `key=value` flags → a record; the value may contain '='; an empty key is an error. */
export function parseAnnotations(values: readonly string[]): Record<string, string> {
  const out: Record<string, string> = {};
  for (const v of values) {
    const eq = v.indexOf('=');
    if (eq <= 0)
      throw new PackfarmError('INVALID_ARGS', `--annotations: "${v}" is not key=value`, {
        hint: 'e.g. --annotations org.opencontainers.image.source=https://example.com/app',
      });
    out[v.slice(0, eq)] = v.slice(eq + 1);
  }
  return out;
}

function describeChild(c: LocalListChild): string {
  const p = c.platform;
  const platform = p ? `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}` : '(no platform)';
  return `  ${platform.padEnd(16)} ${c.digest}  ${c.source.image}`;
}
