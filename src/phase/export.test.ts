import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { writeTestImage } from '../../test/helpers/images.js';
import type { LayerOutput, LayerResult } from '../archive/index.js';
import { type LayoutStore, openLayoutStore } from '../image/layout-store.js';
import { readBaseImage } from '../image/read.js';
import { sha256Digest } from '../oci/digest.js';
import { Label } from '../platform/labels.js';
import type { BuildMetadata } from '../platform/metadata.js';
import { isPackfarmError } from '../util/errors.js';
import { type ExportOptions, exportImage } from './export.js';
import type { LayerProducer, LayerSpec } from './layer-producer.js';

/**
 * The exporter's steps with a fake layer producer: what goes into the image, in which order, with which labels,
 * and what is reused, without tarring anything. Real tar+gzip output is covered by test/integration/export*.
 */

/** Stands in for tar+gzip: a layer's "tar" is a description of its spec, so equal specs give equal diffIDs. */
function fakeProducer(): LayerProducer & { calls: Array<{ what: string; raw: boolean }> } {
  const calls: Array<{ what: string; raw: boolean }> = [];
  return {
    calls,
    async write(spec: LayerSpec, out: LayerOutput, { raw = false } = {}): Promise<LayerResult> {
      const what =
        spec.kind === 'dir' ? `dir ${spec.prefix}` : `entries ${spec.entries.map((e) => e.path).join(',')}`;
      calls.push({ what, raw });
      const tar = Buffer.from(
        `tar of ${what} ${JSON.stringify(spec.kind === 'entries' ? spec.entries : spec.dir)}`,
      );
      const blob = raw ? tar : Buffer.concat([Buffer.from('gz:'), tar]);
      if (typeof out === 'string') await writeFile(out, blob);
      else await new Promise<void>((resolve, reject) => out.end(blob, () => resolve()).on('error', reject));
      return {
        digest: sha256Digest(blob),
        size: blob.length,
        diffId: sha256Digest(tar),
        uncompressedSize: tar.length,
        entries: 1,
      };
    },
  };
}

const metadata: BuildMetadata = {
  buildpacks: [{ id: 'acme/node', version: '1.0.0', api: '0.12' }],
  extensions: [],
  processes: [
    {
      type: 'web',
      command: ['node', 'server.js'],
      args: [],
      direct: false,
      workingDir: undefined,
      execEnv: undefined,
      buildpackId: 'acme/node',
    },
  ],
  slices: [],
  labels: [{ key: 'org.example.team', value: 'web' }],
  buildpackDefaultProcessType: 'web',
  bom: [],
};

let root: string;
let layers: string;
let app: string;
let runStore: LayoutStore;
let outStore: LayoutStore;

beforeEach(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-export-unit-'));
  layers = join(root, 'layers');
  app = join(root, 'app');
  await mkdir(join(layers, 'acme_node', 'node', 'bin'), { recursive: true });
  await writeFile(
    join(layers, 'acme_node', 'node.toml'),
    '[types]\nlaunch = true\ncache = true\n[metadata]\nv = "20"\n',
  );
  await writeFile(join(layers, 'acme_node', 'node', 'bin', 'node'), '#!/bin/sh\n');
  await writeFile(join(layers, 'acme_node', 'build-only.toml'), '[types]\nbuild = true\n');
  await writeFile(join(layers, 'acme_node', 'store.toml'), '[metadata]\nruns = 3\n');
  await mkdir(app, { recursive: true });
  await writeFile(join(app, 'server.js'), 'console.log(1)\n');
  runStore = await openLayoutStore(join(root, 'run'), { create: true });
  await writeTestImage(runStore, { tag: 'base', files: { 'bin/sh': 'sh' } });
  outStore = await openLayoutStore(join(root, 'out'), { create: true });
});

afterEach(async () => {
  await rm(root, { recursive: true, force: true });
});

function options(extra: Partial<ExportOptions> = {}): ExportOptions {
  return {
    layersDir: layers,
    appDir: app,
    group: { group: [{ id: 'acme/node', version: '1.0.0', api: '0.12' }] },
    metadata,
    runImage: { store: runStore, target: 'base', name: 'registry.example/run:base' },
    outputs: [{ store: outStore, tags: ['app'] }],
    platform: { os: 'linux', architecture: 'amd64' },
    ...extra,
  };
}

describe('exportImage, step by step (fake layer producer)', () => {
  it('stacks buildpack, app and lifecycle layers on the run image, with the labels and config of a CNB image', async () => {
    const producer = fakeProducer();
    const result = await exportImage(options({ layerProducer: producer }));

    // Launch layers only (build-only is left out), then the app, then the lifecycle's own layers.
    expect(producer.calls).toEqual([
      { what: 'dir layers/acme_node/node', raw: false },
      { what: 'dir workspace', raw: false },
      { what: 'entries cnb/lifecycle/launcher', raw: false },
      { what: 'entries cnb/process,cnb/process/web', raw: false },
      { what: 'entries cnb/config/metadata.toml', raw: false },
    ]);
    expect(result.layers.map((l) => [l.name, l.outcome])).toEqual([
      ['bp:acme/node:node', 'added'],
      ['app', 'added'],
      ['launcher', 'added'],
      ['process-types', 'added'],
      ['config', 'added'],
    ]);

    const image = await readBaseImage(outStore, 'app');
    expect(image.digest).toBe(result.digest);
    expect(image.config.rootfs.diff_ids.slice(1)).toEqual(result.layers.map((l) => l.diffId));
    expect(image.config.history?.slice(1).map((h) => h.created_by)).toEqual([
      "Layer: 'node', Created by buildpack: acme/node@1.0.0",
      'Layer: Application',
      'Layer: Launcher',
      'Layer: Process Types',
      'Layer: Config',
    ]);
    expect(image.config.config?.Entrypoint).toEqual(['/cnb/lifecycle/launcher']);
    expect(image.config.config?.WorkingDir).toBe('/workspace');
    const labels = image.config.config?.Labels ?? {};
    expect(labels['org.example.team']).toBe('web');
    const lifecycle = JSON.parse(labels[Label.lifecycleMetadata] ?? '{}');
    expect(lifecycle.buildpacks).toEqual([
      {
        key: 'acme/node',
        version: '1.0.0',
        layers: {
          node: { sha: result.layers[0]!.diffId, data: { v: '20' }, launch: true, cache: true, build: false },
        },
        store: { metadata: { runs: 3 } },
      },
    ]);
    expect(lifecycle.app).toEqual([{ sha: result.layers[1]!.diffId }]);
    expect(lifecycle.runImage.reference).toBe(
      `registry.example/run@${(await runStore.getManifest('base')).digest}`,
    );
  });

  it('recognises unchanged directory layers from the previous image by a plain tar, without compressing them', async () => {
    const first = await exportImage(options({ layerProducer: fakeProducer() }));
    const producer = fakeProducer();
    const second = await exportImage(
      options({ layerProducer: producer, previousImage: { store: outStore, target: 'app' } }),
    );
    expect(second.digest).toBe(first.digest);
    // The buildpack layer and the app are probed (raw) and found; only the small lifecycle layers are written.
    expect(producer.calls.filter((c) => c.raw).map((c) => c.what)).toEqual([
      'dir layers/acme_node/node',
      'dir workspace',
    ]);
    expect(producer.calls.filter((c) => !c.raw).map((c) => c.what)).toEqual([
      'entries cnb/lifecycle/launcher',
      'entries cnb/process,cnb/process/web',
      'entries cnb/config/metadata.toml',
    ]);
    expect(second.layers.every((l) => l.outcome === 'reused')).toBe(true);
  });

  it('reads store.toml through its schema: an invalid one is an export error (exit 62)', async () => {
    await writeFile(join(layers, 'acme_node', 'store.toml'), 'metadata = "not a table"\n');
    const err = await exportImage(options({ layerProducer: fakeProducer() })).catch((e) => e);
    expect(isPackfarmError(err, 'INVALID_STORE_TOML')).toBe(true);
    expect(err.exitCode).toBe(62);
  });

  it('refuses a launch layer without files when there is no previous image to take it from (exit 62)', async () => {
    await rm(join(layers, 'acme_node', 'node'), { recursive: true });
    const err = await exportImage(options({ layerProducer: fakeProducer() })).catch((e) => e);
    expect(isPackfarmError(err, 'EXPORT_LAYER_MISSING')).toBe(true);
    expect(err.exitCode).toBe(62);
  });

  it('reports a plain I/O error while writing a layer as an export error (exit 62), not an internal one', async () => {
    const failing: LayerProducer = {
      write: () =>
        Promise.reject(Object.assign(new Error('ENOENT: no such file or directory'), { code: 'ENOENT' })),
    };
    const err = await exportImage(options({ layerProducer: failing })).catch((e) => e);
    expect(isPackfarmError(err, 'EXPORT_ERROR')).toBe(true);
    expect(err.exitCode).toBe(62);
  });
});
