import type { Command } from 'commander';
import { parsePlatform } from '../oci/platform.js';
import type { Platform } from '../oci/platform.js';
import { type CopyEvent, copyImage } from '../image/copy.js';
import { type Inspection, inspectImage } from '../image/inspect.js';
import { insecureRegistriesFrom, openImage } from '../image/transport.js';
import { PackfarmError } from '../util/errors.js';
import {
  type CliIO,
  collect,
  formatBytes,
  writeRaw,
  INSECURE_REGISTRY_FLAG,
  INSECURE_REGISTRY_HELP,
} from './output.js';

/** `packfarm image …`: copy and inspect images in registries and OCI layouts. Parses and prints only. */
export function registerImageCommands(program: Command, io: CliIO): void {
  const image = program
    .command('image')
    .description('Copy and inspect images in registries (REF, docker://REF) and OCI layouts (oci:DIR[:TAG])');

  image
    .command('copy')
    .description('Copy an image or an index between registries and OCI layouts, keeping digests')
    .argument('<src>', 'source: REF, docker://REF, oci:DIR[:TAG] or oci:DIR@sha256:…')
    .argument('<dst>', 'destination, same forms; a missing oci: layout is created')
    .option('--all', 'for an index: copy every platform and the index itself')
    .option('--platform <os/arch[/variant]>', 'for an index: the platform(s) to copy (repeatable)', collect)
    .option('--concurrency <n>', 'blob transfers at once', parsePositiveInt, 4)
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect)
    .option('--json', 'print the copy report as JSON')
    .action(async (srcText: string, dstText: string, o: CopyFlags) => {
      const insecureRegistries = insecureRegistriesFrom(o.insecureRegistry);
      const platforms = parsePlatformFlags(o.platform ?? []);
      if (o.all && platforms.length > 0)
        throw new PackfarmError('INVALID_ARGS', '--all and --platform exclude each other', {
          hint: 'use --all for every platform, or --platform to pick some',
        });
      // The interrupt signal reaches the registry clients too: a transfer in flight stops at once.
      const registry = io.signal ? { signal: io.signal } : {};
      const src = await openImage(srcText, { insecureRegistries, registry });
      const dst = await openImage(dstText, { insecureRegistries, registry, create: true });
      const report = await copyImage({
        src: src.store,
        srcTarget: src.target,
        dst: dst.store,
        ...(dst.tag !== undefined ? { dstTag: dst.tag } : {}),
        all: o.all === true,
        ...(platforms.length > 0 ? { platforms } : {}),
        concurrency: o.concurrency,
        ...(io.signal ? { signal: io.signal } : {}),
        // Plain progress lines on stderr for people; --json keeps stderr for errors only.
        ...(o.json ? {} : { onProgress: (e: CopyEvent) => io.err(progressLine(e)) }),
      });
      const named = dst.location.transport === 'docker' ? dst.location.reference.digest : dst.location.digest;
      if (named !== undefined && named !== report.digest)
        throw new PackfarmError(
          'DIGEST_MISMATCH',
          `copied ${report.digest}, but the destination names ${named}`,
          { hint: 'a digest in the destination must be the digest of what is copied (or leave it out)' },
        );
      if (o.json) {
        io.out(JSON.stringify({ source: src.display, destination: dst.display, ...report }, null, 2));
        return;
      }
      const lines = [`Copied ${src.display} → ${dst.display}`, `  digest:    ${report.digest}`];
      if (report.selectedFrom)
        lines.push(
          `  selected:  ${report.selectedFrom.platforms.join(', ')} from index ${report.selectedFrom.index}` +
            (report.selectedFrom.filtered ? ' (new index with those platforms only)' : ''),
        );
      lines.push(
        `  images:    ${report.images.length}${report.images.some((i) => i.platform) ? ` (${report.images.map((i) => i.platform ?? '?').join(', ')})` : ''}`,
        `  manifests: ${report.manifests.pushed} written, ${report.manifests.exists} already there`,
        `  blobs:     ${report.blobs.uploaded} copied (${formatBytes(report.bytesUploaded)}), ${report.blobs.mounted} mounted, ${report.blobs.exists} already there`,
      );
      io.out(lines.join('\n'));
    });

  image
    .command('inspect')
    .description('Show an image or index: media type, digest, platforms, layers and config')
    .argument('<ref>', 'REF, docker://REF, oci:DIR[:TAG] or oci:DIR@sha256:…')
    .option('--raw', 'print the manifest bytes exactly as stored')
    .option('--json', 'print structured JSON')
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect)
    .action(async (ref: string, o: { raw?: boolean; json?: boolean; insecureRegistry?: string[] }) => {
      const opened = await openImage(ref, { insecureRegistries: insecureRegistriesFrom(o.insecureRegistry) });
      const { inspection, raw } = await inspectImage(opened.store, opened.target);
      if (o.raw) {
        writeRaw(io, raw.bytes);
        return;
      }
      if (o.json) {
        io.out(JSON.stringify({ reference: opened.display, ...inspection }, null, 2));
        return;
      }
      io.out(renderInspection(opened.display, inspection));
    });
}

interface CopyFlags {
  all?: boolean;
  platform?: string[];
  concurrency: number;
  insecureRegistry?: string[];
  json?: boolean;
}

/** `--platform a,b --platform c` → parsed, in order, duplicates kept out. */
export function parsePlatformFlags(values: readonly string[]): Platform[] {
  const out: Platform[] = [];
  for (const v of values)
    for (const part of v.split(',')) {
      if (part.trim() === '') continue;
      out.push(parsePlatform(part, '--platform'));
    }
  return out;
}

export function parsePositiveInt(value: string): number {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1)
    throw new PackfarmError('INVALID_ARGS', `"${value}" is not a positive whole number`);
  return n;
}

export function progressLine(e: CopyEvent): string {
  const what = e.type === 'blob' ? 'blob' : 'manifest';
  const how = e.outcome === 'pushed' ? 'written' : e.outcome === 'exists' ? 'already there' : e.outcome;
  return `${what} ${shortDigest(e.digest)} ${formatBytes(e.size)}: ${how}${e.type === 'manifest' && e.tag ? ` (tag ${e.tag})` : ''}`;
}

function shortDigest(d: string): string {
  return d.slice(0, d.indexOf(':') + 13);
}

function renderInspection(reference: string, x: Inspection): string {
  const lines = [`Reference:  ${reference}`, `Media type: ${x.mediaType}`, `Digest:     ${x.digest}`];
  if (x.kind === 'index') {
    lines.push(`Manifests:  ${x.manifests.length}`);
    for (const m of x.manifests)
      lines.push(`  ${(m.platform ?? '(no platform)').padEnd(16)} ${m.digest}  ${formatBytes(m.size)}`);
  } else {
    lines.push(`Platform:   ${x.platform}`);
    if (x.created) lines.push(`Created:    ${x.created}`);
    lines.push(`Layers:     ${x.layers.length} (${formatBytes(x.layersSize)})`);
    for (const l of x.layers) lines.push(`  ${l.digest}  ${formatBytes(l.size)}`);
    const c = x.config;
    lines.push(`Config:     ${c.digest}`);
    if (c.entrypoint) lines.push(`Entrypoint: ${JSON.stringify(c.entrypoint)}`);
    if (c.cmd) lines.push(`Cmd:        ${JSON.stringify(c.cmd)}`);
    if (c.workingDir) lines.push(`WorkingDir: ${c.workingDir}`);
    if (c.user) lines.push(`User:       ${c.user}`);
    if (c.exposedPorts) lines.push(`Ports:      ${c.exposedPorts.join(', ')}`);
    if (c.env && c.env.length > 0) lines.push('Env:', ...c.env.map((e) => `  ${e}`));
    const labels = Object.entries(c.labels ?? {}).sort(([a], [b]) => (a < b ? -1 : 1));
    if (labels.length > 0) lines.push('Labels:', ...labels.map(([k, v]) => `  ${k}=${truncate(v, 120)}`));
  }
  const ann = Object.entries(x.annotations ?? {});
  if (ann.length > 0) lines.push('Annotations:', ...ann.map(([k, v]) => `  ${k}=${v}`));
  return lines.join('\n');
}

function truncate(s: string, n: number): string {
  return s.length <= n ? s : `${s.slice(0, n - 1)}…`;
}
