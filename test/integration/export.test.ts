import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLayoutStore } from '../../src/image/layout-store.js';
import type { ImageStore } from '../../src/image/store.js';
import { ImageConfigSchema } from '../../src/oci/schemas.js';
import type { GroupFile } from '../../src/platform/files.js';
import { BuildMetadataSchema, Label, LifecycleMetadataSchema } from '../../src/platform/labels.js';
import { readReport } from '../../src/platform/report.js';
import { type ExportOptions, exportImage } from '../../src/phase/export.js';
import { registryStore } from '../helpers/cli.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { buildWorkspace, type Workspace } from '../helpers/workspace.js';
import { type PodmanRunner, createPodmanRunner, createRunImage } from '../helpers/run-image.js';

/**
 * Build a fixture app with the host executor, export it onto a busybox run image into the registry and into an
 * OCI layout, and run the result with podman: default process, another process type, overriding args, launch
 * env, process-specific env and exec.d.
 */
const group: GroupFile = { group: [{ id: 'export/hello', version: '1.0.0', api: '0.12' }] };

let root: string;
let registry: TestRegistry;
let podman: PodmanRunner;
let runStore: ImageStore;
let ws: Workspace;

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-export-'));
  registry = await startRegistry();
  podman = await createPodmanRunner();
  runStore = registryStore(registry, 'run');
  await createRunImage({ store: runStore, tag: 'v1' });
  ws = await buildWorkspace(root, {
    buildpacks: 'export',
    group,
    files: { 'index.txt': 'index\n', 'static/site.css': 'body{}\n' },
  });
});

afterAll(async () => {
  await podman?.cleanup();
  await registry?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

function baseOptions(outputs: ExportOptions['outputs'], extra: Partial<ExportOptions> = {}): ExportOptions {
  return {
    layersDir: ws.layers,
    appDir: ws.app,
    group,
    runImage: { store: runStore, target: 'v1', name: `${registry.host}/run:v1` },
    outputs,
    ...extra,
  };
}

async function configOf(store: ImageStore, target: string) {
  const m = JSON.parse((await store.getManifest(target)).bytes.toString('utf8'));
  const chunks: Buffer[] = [];
  for await (const c of await store.getBlob(m.config.digest)) chunks.push(c as Buffer);
  return ImageConfigSchema.parse(JSON.parse(Buffer.concat(chunks).toString('utf8')));
}

describe('export to the registry', () => {
  let appStore: ImageStore;
  let digest: string;

  beforeAll(async () => {
    appStore = registryStore(registry, 'app');
    registry.resetCounters();
    const result = await exportImage(
      baseOptions([{ store: appStore, tags: ['latest'] }], {
        reportPath: join(root, 'report.toml'),
        projectMetadata: { source: { type: 'git' } },
      }),
    );
    digest = result.digest;
    // The run image's layer is mounted across repositories, never downloaded.
    expect(result.baseLayers.map((l) => l.outcome)).toEqual(['mounted']);
    const runBlobGets = registry.requests.filter(
      (r) => r.kind === 'blob' && r.method === 'GET' && r.repository === 'run',
    );
    // Only the run image's config is read from its repository.
    expect(runBlobGets).toHaveLength(1);
    expect(result.layers.map((l) => l.name)).toEqual([
      'bp:export/hello:hello',
      'sbom',
      'app-slice-0',
      'app',
      'launcher',
      'process-types',
      'config',
    ]);
    expect(result.layers.every((l) => l.outcome === 'added')).toBe(true);
  });

  it('writes report.toml and labels that parse with the schemas', async () => {
    const report = await readReport(join(root, 'report.toml'));
    expect(report.image.digest).toBe(digest);
    expect(report.image.tags).toEqual([`${registry.host}/app:latest`]);
    expect(report.image.manifestSize).toBe((await appStore.getManifest('latest')).bytes.length);

    const cfg = await configOf(appStore, 'latest');
    const labels = cfg.config?.Labels ?? {};
    const lm = LifecycleMetadataSchema.parse(JSON.parse(labels[Label.lifecycleMetadata] ?? '{}'));
    expect(lm.buildpacks[0]?.key).toBe('export/hello');
    expect(Object.keys(lm.buildpacks[0]?.layers ?? {})).toEqual(['hello']);
    expect(lm.buildpacks[0]?.layers.hello?.data).toEqual({ flavour: 'sh' });
    expect(lm.app).toHaveLength(2);
    expect(lm.sbom?.sha).toMatch(/^sha256:/);
    expect(lm.runImage.topLayer).toBe(cfg.rootfs.diff_ids[0]);
    expect(lm.runImage.reference).toMatch(new RegExp(`^${registry.host}/run@sha256:`));
    const bm = BuildMetadataSchema.parse(JSON.parse(labels[Label.buildMetadata] ?? '{}'));
    expect(bm.processes.map((p) => p.type)).toEqual(['web', 'worker']);
    expect(labels[Label.distroName]).toBe('busybox');
    expect(labels[Label.rebasable]).toBe('true');
    expect(labels['org.example.fixture']).toBe('export/hello');
    expect(JSON.parse(labels[Label.projectMetadata] ?? '')).toEqual({ source: { type: 'git' } });
    expect(cfg.config?.WorkingDir).toBe('/workspace');
    expect(cfg.config?.User).toBe('1000:1000');
    expect(cfg.config?.Entrypoint).toEqual(['/cnb/lifecycle/launcher']);
    const env = cfg.config?.Env ?? [];
    expect(env).toContain('CNB_LAYERS_DIR=/layers');
    expect(env).toContain('CNB_APP_DIR=/workspace');
    expect(env.find((e) => e.startsWith('PATH='))).toMatch(/^PATH=\/cnb\/process:/);
    expect(env).toContain('GREETING=bonjour');
    expect(cfg.history).toHaveLength(cfg.rootfs.diff_ids.length);
  });

  it('runs the default process with launch env, its own env and exec.d', async () => {
    const r = await podman.run(`${registry.host}/app:latest`);
    expect(r.stderr).toBe('');
    expect(r.stdout.trim()).toBe(
      'hello world GREETING=bonjour WEB_ONLY=web-env WORKER_MODE=unset FROM_EXECD=yes pwd=/workspace user=1000',
    );
  });

  it('replaces the default args with the user args', async () => {
    const r = await podman.run(`${registry.host}/app:latest`, { args: ['there', 'again'] });
    expect(r.stdout.trim()).toMatch(/^hello there again GREETING=bonjour WEB_ONLY=web-env /);
  });

  it('selects another process type by entrypoint and by CNB_PROCESS_TYPE', async () => {
    const expected = 'worker a b GREETING=bonjour WEB_ONLY=unset WORKER_MODE=busy FROM_EXECD=yes';
    const byEntrypoint = await podman.run(`${registry.host}/app:latest`, { entrypoint: 'worker' });
    expect(byEntrypoint.stdout.trim()).toBe(expected);
    const byEnv = await podman.run(`${registry.host}/app:latest`, { env: { CNB_PROCESS_TYPE: 'worker' } });
    expect(byEnv.stdout.trim()).toBe(expected);
    const withArgs = await podman.run(`${registry.host}/app:latest`, { entrypoint: 'worker', args: ['z'] });
    expect(withArgs.stdout.trim()).toMatch(/^worker z GREETING=bonjour/);
    const unknown = await podman.run(`${registry.host}/app:latest`, { env: { CNB_PROCESS_TYPE: 'nope' } });
    expect(unknown.exitCode).not.toBe(0);
    expect(unknown.stderr).toContain('unknown process type "nope"');
  });

  it('skopeo inspects the image', async () => {
    const { stdout } = await execa('skopeo', [
      'inspect',
      '--tls-verify=false',
      `docker://${registry.host}/app:latest`,
    ]);
    const doc = JSON.parse(stdout) as { Digest: string; Architecture: string; Layers: string[] };
    expect(doc.Digest).toBe(digest);
    expect(doc.Architecture).toBe('amd64');
    expect(doc.Layers).toHaveLength(8);
  });

  it('re-exporting the same build uploads no layer', async () => {
    registry.resetCounters();
    const again = await exportImage(
      baseOptions([{ store: appStore, tags: ['latest'] }], { projectMetadata: { source: { type: 'git' } } }),
    );
    expect(again.digest).toBe(digest);
    // No previous image was named: the blobs are already in the registry, not taken from a previous image.
    expect(again.layers.every((l) => l.outcome === 'existing')).toBe(true);
    expect(registry.counters().bytesUploaded).toBeLessThan(10_000);
    expect(registry.counters().blobUploads).toBe(0);
  });
});

describe('a rebuild after an interrupted publish', () => {
  it('reports as reused only the layers of the previous image; blobs the push left behind are "existing"', async () => {
    const appStore = registryStore(registry, 'interrupted');
    await exportImage(baseOptions([{ store: appStore, tags: ['latest'] }]));
    // The app changes; a publish of it uploads its blobs but dies before the tag is written.
    const app2 = join(root, 'workspace-interrupted');
    await execa('cp', ['-a', ws.app, app2]);
    await writeFile(join(app2, 'index.txt'), 'index, changed\n');
    await exportImage(baseOptions([{ store: appStore, tags: [] }], { appDir: app2 }));
    // The rebuild, against the image the tag still names.
    const again = await exportImage(
      baseOptions([{ store: appStore, tags: ['latest'] }], {
        appDir: app2,
        previousImage: { store: appStore, target: 'latest' },
      }),
    );
    const outcome = Object.fromEntries(again.layers.map((l) => [l.name, l.outcome]));
    expect(outcome.app).toBe('existing');
    expect(outcome['bp:export/hello:hello']).toBe('reused');
    expect(outcome.launcher).toBe('reused');
    expect(again.layers.filter((l) => l.outcome === 'added')).toEqual([]);
  });
});

describe('a launch layer kept as metadata only', () => {
  it('reuses the previous image blob by diffID, without the layer files', async () => {
    const appStore = registryStore(registry, 'reuse');
    const first = await exportImage(baseOptions([{ store: appStore, tags: ['v1'] }]));
    const hello = first.layers.find((l) => l.name === 'bp:export/hello:hello');
    // A copy of the layers dir where the hello layer has only its toml (as the restorer leaves it).
    const layers2 = join(root, 'layers-metadata-only');
    await execa('cp', ['-a', ws.layers, layers2]);
    await rm(join(layers2, 'export_hello', 'hello'), { recursive: true });
    registry.resetCounters();
    const second = await exportImage(
      baseOptions([{ store: appStore, tags: ['v2'] }], {
        layersDir: layers2,
        previousImage: { store: appStore, target: 'v1' },
      }),
    );
    const reused = second.layers.find((l) => l.name === 'bp:export/hello:hello');
    expect(reused?.diffId).toBe(hello?.diffId);
    expect(reused?.outcome).toBe('reused');
    expect(second.warnings.join('\n')).toContain('export/hello:hello is reused from the previous image');
    expect(second.lifecycleMetadata.buildpacks[0]?.layers.hello?.sha).toBe(hello?.diffId);
    // Only what changed goes up (process scripts without the layer's env, the image config): not the layer.
    const uploads = registry.requests.filter((r) => r.kind === 'upload' && r.method === 'PUT');
    expect(uploads.length).toBeGreaterThan(0);
    expect(uploads.some((r) => decodeURIComponent(r.query).includes(reused?.digest ?? '-'))).toBe(false);
    expect(uploads.every((r) => decodeURIComponent(r.query).includes('digest=sha256:'))).toBe(true);
  });

  it('fails when there is no previous layer to reuse', async () => {
    const layers3 = join(root, 'layers-orphan');
    await execa('cp', ['-a', ws.layers, layers3]);
    await rm(join(layers3, 'export_hello', 'hello'), { recursive: true });
    const out = await openLayoutStore(join(root, 'layout-orphan'), { create: true });
    const err = await exportImage(baseOptions([{ store: out, tags: ['x'] }], { layersDir: layers3 })).catch(
      (e: unknown) => e,
    );
    expect((err as { code?: string }).code).toBe('EXPORT_LAYER_MISSING');
    expect((err as { exitCode?: number }).exitCode).toBe(62);
  });
});

describe('export to an OCI layout', () => {
  it('is deterministic, runs under podman and unpacks with umoci', async () => {
    const a = await openLayoutStore(join(root, 'layout-a'), { create: true });
    const b = await openLayoutStore(join(root, 'layout-b'), { create: true });
    const ra = await exportImage(baseOptions([{ store: a, tags: ['app'] }]));
    const rb = await exportImage(baseOptions([{ store: b, tags: ['app'] }]));
    expect(rb.digest).toBe(ra.digest);
    expect(ra.baseLayers.map((l) => l.outcome)).toEqual(['uploaded']);

    const r = await podman.run(`oci:${join(root, 'layout-a')}:app`, { env: { CNB_PROCESS_TYPE: 'worker' } });
    expect(r.stdout.trim()).toBe(
      'worker a b GREETING=bonjour WEB_ONLY=unset WORKER_MODE=busy FROM_EXECD=yes',
    );

    // The app layer: owned by the build user, mtimes at the creation time, the slice's file left out.
    const app = ra.layers.find((l) => l.name === 'app');
    const listing = (await execa('tar', ['-tvzf', a.blobPath(app!.digest), '--numeric-owner'])).stdout;
    expect(listing).toMatch(/-rw-r--r-- 1000\/1000 +6 1980-01-01 00:00 workspace\/index\.txt/);
    expect(listing).not.toContain('site.css');
    const slice = ra.layers.find((l) => l.name === 'app-slice-0');
    expect((await execa('tar', ['-tzf', a.blobPath(slice!.digest)])).stdout).toContain(
      'workspace/static/site.css',
    );

    const bundle = join(root, 'bundle');
    await execa('umoci', ['unpack', '--rootless', '--image', `${join(root, 'layout-a')}:app`, bundle]);
    const rootfs = join(bundle, 'rootfs');
    expect(await readFile(join(rootfs, 'workspace', 'static', 'site.css'), 'utf8')).toBe('body{}\n');
    expect(
      await readFile(join(rootfs, 'layers', 'export_hello', 'hello', 'env.launch', 'GREETING'), 'utf8'),
    ).toBe('bonjour');
    expect(await readFile(join(rootfs, 'cnb', 'process', 'web'), 'utf8')).toContain('exec hello "$@"');
    const sbom = join(rootfs, 'layers', 'sbom', 'launch', 'export_hello', 'hello', 'sbom.cdx.json');
    expect(JSON.parse(await readFile(sbom, 'utf8')).bomFormat).toBe('CycloneDX');
    await expect(readFile(join(rootfs, 'layers', 'export_hello', 'tools.toml'), 'utf8')).rejects.toThrow();
  });

  it('a different creation time gives a different digest', async () => {
    const c = await openLayoutStore(join(root, 'layout-c'), { create: true });
    const d = await openLayoutStore(join(root, 'layout-d'), { create: true });
    const rc = await exportImage(baseOptions([{ store: c, tags: ['app'] }]));
    const rd = await exportImage(
      baseOptions([{ store: d, tags: ['app'] }], { createdAt: new Date(1_700_000_000_000) }),
    );
    expect(rd.digest).not.toBe(rc.digest);
    const cfg = await configOf(d, 'app');
    expect(cfg.created).toBe('2023-11-14T22:13:20Z');
  });
});
