import type { Command } from 'commander';
import { insecureRegistriesFrom } from '../image/transport.js';
import type { AppImageDetails, AppInspectReport, AppInspectSection } from '../api/inspect.js';
import { PackfarmError } from '../util/errors.js';
import { stringifyToml } from '../util/toml.js';
import { toYaml } from '../util/yaml.js';
import { type CliIO, collect, INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP } from './output.js';

/** `packfarm inspect IMAGE`: what a CNB app image was built from and how it starts (pack's `inspect`). */
export function registerInspectCommands(program: Command, io: CliIO): void {
  program
    .command('inspect')
    .alias('inspect-image')
    .description(
      'Show a CNB app image: run image, target, buildpacks, processes, rebasable (local layout and registry)',
    )
    .argument('<image>', 'REF (looked up in the local layout and the registry) or oci:DIR[:TAG]')
    .option(
      '-o, --output <format>',
      'human-readable, json, yaml or toml (shape: spec/inspect.md)',
      'human-readable',
    )
    .option('--json', 'the same as -o json')
    .option(
      '--bom',
      "print the legacy bill of materials of io.buildpacks.build.metadata (as JSON, or -o's format)",
    )
    .option(INSECURE_REGISTRY_FLAG, INSECURE_REGISTRY_HELP, collect)
    .action(
      async (
        image: string,
        o: { json?: boolean; output: string; bom?: boolean; insecureRegistry?: string[] },
      ) => {
        const format = o.json ? 'json' : o.output;
        if (!['human-readable', 'json', 'yaml', 'toml'].includes(format))
          throw new PackfarmError(
            'INVALID_ARGS',
            `--output ${JSON.stringify(o.output)}: not an output format`,
            {
              hint: '-o human-readable, json, yaml or toml',
            },
          );
        const report = await (await import('../api/inspect.js')).inspectApp(image, {
          insecureRegistries: insecureRegistriesFrom(o.insecureRegistry),
        });
        const sections = [report.remote, report.local].filter((s): s is AppInspectSection => s !== null);
        if (!sections.some((s) => s.present)) {
          const failed = sections.find((s) => s.error)?.error;
          if (failed)
            throw new PackfarmError(failed.code, failed.message, {
              ...(failed.hint ? { hint: failed.hint } : {}),
              exitCode: failed.exitCode,
            });
          throw new PackfarmError(
            'IMAGE_NOT_FOUND',
            `unable to find image ${image} ${report.remote ? `locally (${report.local.location}) or remotely (${report.remote.location})` : `at ${report.local.location}`}`,
            { hint: 'check the name and tag; a local image is one built without --publish' },
          );
        }
        const doc = o.bom ? bomReport(report) : report;
        if (format === 'human-readable' && !o.bom) io.out(renderReport(report));
        else io.out(formatDocument(doc, format === 'human-readable' ? 'json' : format));
      },
    );
}

/**
 * `--bom`: pack's shape, `{remote: {bom: […]}, local: {bom: […]}}` (null where the image is not), per platform
 * for an index.
 */
function bomReport(report: AppInspectReport): Record<string, unknown> {
  const section = (s: AppInspectSection | null) => {
    const r = s?.result;
    if (!r) return null;
    if (r.kind === 'image') return { bom: r.bom };
    return { images: r.images.map((i) => ({ platform: i.platform, bom: i.bom })) };
  };
  return { remote: section(report.remote), local: section(report.local) };
}

/** A document as JSON, YAML or TOML (TOML has no null: null fields are left out there). */
export function formatDocument(doc: unknown, format: string): string {
  if (format === 'yaml') return toYaml(doc).trimEnd();
  if (format === 'toml') return stringifyToml(withoutNulls(doc) as Record<string, unknown>).trimEnd();
  return JSON.stringify(doc, null, 2);
}

function withoutNulls(v: unknown): unknown {
  if (Array.isArray(v)) return v.filter((x) => x !== null).map(withoutNulls);
  if (v !== null && typeof v === 'object')
    return Object.fromEntries(
      Object.entries(v)
        .filter(([, x]) => x !== null)
        .map(([k, x]) => [k, withoutNulls(x)]),
    );
  return v;
}

/** Human output in pack's order: the registry first, then the local copy. */
export function renderReport(report: AppInspectReport): string {
  const lines = [`Inspecting image: ${report.image}`];
  if (report.remote) lines.push('', 'REMOTE:', ...renderSection(report.remote));
  lines.push('', report.remote ? 'LOCAL:' : 'IMAGE:', ...renderSection(report.local));
  return lines.join('\n');
}

function renderSection(s: AppInspectSection): string[] {
  const lines = [`Location: ${s.location}`];
  if (s.error) {
    lines.push(`error: ${s.error.message}`);
    if (s.error.hint) lines.push(`hint: ${s.error.hint}`);
    return lines;
  }
  if (!s.result) return [...lines, '(not present)'];
  const r = s.result;
  if (r.kind === 'image') return [...lines, '', ...renderImage(r)];
  lines.push(
    '',
    `Index: ${r.digest}`,
    `Media Type: ${r.mediaType}`,
    `Images: ${r.images.length}${r.images.length ? ` (${r.images.map((i) => i.platform).join(', ')})` : ''}`,
  );
  for (const img of r.images) {
    // The platform heads each child's block; the rest of the block is indented under it.
    const [first, ...rest] = renderImage(img);
    lines.push('', first ?? '', ...rest.map((l) => (l ? `  ${l}` : l)));
  }
  return lines;
}

export function renderImage(d: AppImageDetails): string[] {
  const lines = [`Platform: ${d.platform}`, `Digest: ${d.digest}`];
  if (d.created) lines.push(`Created: ${d.created}`);
  const t = d.target;
  const distro = t.distro ? `${t.distro.name}${t.distro.version ? ` ${t.distro.version}` : ''}` : null;
  if (!d.cnb) {
    lines.push(
      '',
      `Target: ${[t.os, t.arch, t.variant].filter(Boolean).join('/')}${distro ? ` (${distro})` : ''}`,
      '',
      '(no CNB labels: this image was not built by a buildpacks lifecycle)',
    );
    return lines;
  }
  if (d.stack) lines.push('', `Stack: ${d.stack}`);
  lines.push('', 'Base Image:');
  if (d.runImage?.reference) lines.push(`  Reference: ${d.runImage.reference}`);
  lines.push(`  Top Layer: ${d.runImage?.topLayer ?? '(unknown)'}`);
  lines.push(`  Target: ${[t.os, t.arch, t.variant].filter(Boolean).join('/')}`);
  if (distro) lines.push(`  Distro: ${distro}`);
  if (t.baseId) lines.push(`  Base ID: ${t.baseId}`);

  lines.push('', 'Run Images:');
  const runImages = [
    ...(d.runImage?.image ? [d.runImage.image] : []),
    ...(d.runImage?.mirrors ?? []).map((m) => `${m} (mirror)`),
  ];
  lines.push(...(runImages.length ? runImages.map((r) => `  ${r}`) : ['  (none)']));

  lines.push('', `Rebasable: ${d.rebasable}`);

  lines.push('', 'Buildpacks:');
  if (d.buildpacks.length === 0) lines.push('  (buildpack metadata not present)');
  else
    lines.push(
      ...table([
        ['ID', 'VERSION', 'HOMEPAGE'],
        ...d.buildpacks.map((b) => [b.id, b.version, b.homepage ?? '-']),
      ]),
    );

  if (d.processes.length === 0) {
    lines.push(
      '',
      'Processes:',
      '  (none: no buildpack declared a process; give the command to run the image)',
    );
  } else {
    lines.push('', 'Processes:');
    lines.push(
      ...table([
        ['TYPE', 'COMMAND', 'ARGS', 'WORK DIR'],
        ...d.processes.map((p) => [
          p.default ? `${p.type} (default)` : p.type,
          p.command.join(' '),
          p.args.join(' '),
          p.workingDir,
        ]),
      ]),
    );
  }
  if (d.sbom) lines.push('', `SBOM: ${d.sbom.diffId}`);
  return lines;
}

/** Columns padded to the widest cell, indented by two spaces (trailing blanks trimmed). */
function table(rows: string[][]): string[] {
  const widths: number[] = [];
  for (const row of rows) for (const [i, c] of row.entries()) widths[i] = Math.max(widths[i] ?? 0, c.length);
  return rows.map((row) => `  ${row.map((c, i) => c.padEnd((widths[i] ?? 0) + 4)).join('')}`.trimEnd());
}
