import { randomBytes } from 'node:crypto';
import { lstat, mkdir, mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { publishIndex } from '../../src/image/publish-index.js';
import { openLayoutStore } from '../../src/image/layout-store.js';
import type { ImageStore } from '../../src/image/store.js';
import { appImageLocation, openImage } from '../../src/image/transport.js';
import { type Platform, parsePlatform } from '../../src/oci/platform.js';
import { type ExportResult, exportImage } from '../../src/phase/export.js';
import { downloadSbom } from '../../src/api/sbom.js';
import type { BuildMetadata } from '../../src/platform/metadata.js';
import { canonicalJson } from '../../src/util/json.js';
import { registryStore, runCli, usePackfarmHome } from '../helpers/cli.js';
import { tarGz, writeTestImage } from '../helpers/images.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';
import { createRunImage } from '../helpers/run-image.js';

/**
 * `packfarm sbom download` over real app images exported by exportImage: from the default local layout, from
 * a registry (a two-platform index, --platform), exact SBOM bytes at pack's paths, and the refusals (no SBOM,
 * not a CNB image, an SBOM layer that would write outside layers/sbom or delete files).
 */
const AMD64 = parsePlatform('linux/amd64');
const ARM64 = parsePlatform('linux/arm64');
const group = { group: [{ id: 'example/ruby', version: '1.0.0', api: '0.10' }] };
const metadata: BuildMetadata = {
  buildpacks: [{ id: 'example/ruby', version: '1.0.0', api: '0.10' }],
  extensions: [],
  processes: [
    {
      type: 'web',
      command: ['ruby', 'app.rb'],
      args: [],
      direct: true,
      workingDir: undefined,
      execEnv: undefined,
      buildpackId: 'example/ruby',
    },
  ],
  slices: [],
  labels: [],
  buildpackDefaultProcessType: 'web',
  bom: [],
};
const SBOM_PATH = 'layers/sbom/launch/example_ruby/gems/sbom.cdx.json';
const SPDX_PATH = 'layers/sbom/launch/example_ruby/sbom.spdx.json';
const sbomBytes = (arch: string) => `{"bomFormat":"CycloneDX","specVersion":"1.4","arch":"${arch}"}\n`;
const spdxBytes = (arch: string) => `{"spdxVersion":"SPDX-2.3","name":"${arch}"}`;

let root: string;
let home: string;
let restoreHome: (() => void) | undefined;
let registry: TestRegistry;
let appStore: ImageStore;
let children: ExportResult[];
let local: ExportResult;

async function prepareLayers(dir: string, arch: string, withSbom = true) {
  const layers = join(dir, 'layers');
  const app = join(dir, 'workspace');
  const bp = join(layers, 'example_ruby');
  await mkdir(join(bp, 'gems'), { recursive: true });
  await writeFile(join(bp, 'gems', 'rack.rb'), `rack ${arch}\n`);
  await writeFile(join(bp, 'gems.toml'), '[types]\nlaunch = true\n');
  if (withSbom) {
    await mkdir(join(layers, 'sbom', 'launch', 'example_ruby', 'gems'), { recursive: true });
    await writeFile(join(layers, SBOM_PATH.slice('layers/'.length)), sbomBytes(arch));
    await writeFile(join(layers, SPDX_PATH.slice('layers/'.length)), spdxBytes(arch));
  }
  await mkdir(app, { recursive: true });
  await writeFile(join(app, 'app.rb'), 'puts 1\n');
  return { layers, app };
}

/** Every regular file under dir, relative, sorted. */
async function filesUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { recursive: true, withFileTypes: true }))
    if (e.isFile()) out.push(join(e.parentPath, e.name).slice(dir.length + 1));
  return out.sort();
}

beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'pf-sbom-'));
  home = join(root, 'home');
  restoreHome = usePackfarmHome(home);
  registry = await startRegistry();
  const runStore = registryStore(registry, 'run');
  appStore = registryStore(registry, 'app');

  // Two children pushed by digest, then the index under a tag.
  children = [];
  for (const platform of [AMD64, ARM64] as Platform[]) {
    const arch = platform.architecture;
    await createRunImage({ store: runStore, tag: arch, platform });
    const dirs = await prepareLayers(join(root, arch), arch);
    children.push(
      await exportImage({
        layersDir: dirs.layers,
        appDir: dirs.app,
        group,
        metadata,
        runImage: { store: runStore, target: arch, name: `${registry.host}/run:${arch}` },
        platform,
        outputs: [{ store: appStore, tags: [] }],
      }),
    );
  }
  await publishIndex({ store: appStore, images: children.map((c) => c.digest), tags: ['multi'] });

  // The default local layout (a build without --publish), holding a single image.
  const localDirs = await prepareLayers(join(root, 'local'), 'local');
  const localRun = await openLayoutStore(join(root, 'runs'), { create: true });
  await createRunImage({ store: localRun, tag: 'run' });
  const dest = await openImage(appImageLocation(`${registry.host}/app:1`, { publish: false }), {
    create: true,
  });
  local = await exportImage({
    layersDir: localDirs.layers,
    appDir: localDirs.app,
    group,
    metadata,
    runImage: { store: localRun, target: 'run' },
    platform: AMD64,
    outputs: [{ store: dest.store, tags: ['1'] }],
  });

  // Without SBOM files, and not a CNB image at all.
  const noSbom = await prepareLayers(join(root, 'nosbom'), 'amd64', false);
  const others = await openLayoutStore(join(root, 'others'), { create: true });
  await exportImage({
    layersDir: noSbom.layers,
    appDir: noSbom.app,
    group,
    metadata,
    runImage: { store: localRun, target: 'run' },
    platform: AMD64,
    outputs: [{ store: others, tags: ['nosbom'] }],
  });
  await writeTestImage(others, { tag: 'plain' });

  // Hand-made "SBOM" layers that must be refused.
  const bad: Array<[string, Record<string, string>]> = [
    ['outside', { 'layers/sbom/launch/a.json': '{}', 'etc/profile': 'evil\n' }],
    ['whiteout', { 'layers/sbom/launch/a.json': '{}', 'layers/sbom/launch/.wh.precious.txt': '' }],
    ['opaque', { 'layers/sbom/launch/a.json': '{}', 'layers/.wh..wh..opq': '' }],
  ];
  for (const [tag, files] of bad) {
    const layer = await tarGz(files);
    await writeTestImage(others, {
      tag,
      layers: [files],
      env: ['CNB_LAYERS_DIR=/layers'],
      labels: { 'io.buildpacks.lifecycle.metadata': canonicalJson({ sbom: { sha: layer.diffId } }) },
    });
  }
});

afterAll(async () => {
  restoreHome?.();
  await registry?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

describe('packfarm sbom download', () => {
  it('writes the SBOM files of a local image at pack paths, byte for byte', async () => {
    const out = join(root, 'out-local');
    const r = await runCli('sbom', 'download', `${registry.host}/app:1`, '-o', out);
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    expect(await filesUnder(out)).toEqual([SBOM_PATH, SPDX_PATH]);
    expect(await readFile(join(out, SBOM_PATH), 'utf8')).toBe(sbomBytes('local'));
    expect(await readFile(join(out, SPDX_PATH), 'utf8')).toBe(spdxBytes('local'));
    expect(r.out).toContain(`(linux/amd64, ${local.digest})`);
    expect(r.out).toContain(`written to ${out}: 2 files`);
    expect(r.out).toContain(`  ${SBOM_PATH}`);
  });

  it('a download that fails midway leaves the complete files already in the output dir', async () => {
    const layoutDir = join(root, 'breakable');
    const store = await openLayoutStore(layoutDir, { create: true });
    const dirs = await prepareLayers(join(root, 'breakable-src'), 'breakable');
    await exportImage({
      layersDir: dirs.layers,
      appDir: dirs.app,
      group,
      metadata,
      runImage: { store: await openLayoutStore(join(root, 'runs')), target: 'run' },
      platform: AMD64,
      outputs: [{ store, tags: ['1'] }],
    });
    const out = join(root, 'out-kept');
    const first = await downloadSbom({ store, target: '1', destDir: out, platform: AMD64 });
    expect(await readFile(join(out, SBOM_PATH), 'utf8')).toBe(sbomBytes('breakable'));

    // The stored SBOM blob now holds other (shorter) bytes: they are read, then fail the digest check.
    // A large file after them, so the first files are unpacked well before the end of the stream fails.
    const other = await tarGz({
      [SBOM_PATH]: '{"truncated',
      [SPDX_PATH]: '',
      'layers/sbom/launch/zz/padding.json': randomBytes(4 * 1024 * 1024).toString('hex'),
    });
    await writeFile(join(layoutDir, 'blobs', 'sha256', first.layerDigest.slice('sha256:'.length)), other.gz);
    await expect(downloadSbom({ store, target: '1', destDir: out, platform: AMD64 })).rejects.toMatchObject({
      code: 'BLOB_DIGEST_MISMATCH',
    });
    expect(await readFile(join(out, SBOM_PATH), 'utf8')).toBe(sbomBytes('breakable'));
    expect(await readFile(join(out, SPDX_PATH), 'utf8')).toBe(spdxBytes('breakable'));
    expect(await readdir(out)).toEqual(['layers']);
  });

  it('reads the registry with --remote: the host platform of an index by default, --platform picks another', async () => {
    const host = join(root, 'out-host');
    const r = await runCli(
      'sbom',
      'download',
      `${registry.host}/app:multi`,
      '--remote',
      '--insecure-registry',
      registry.host,
      '--output-dir',
      host,
      '--json',
    );
    expect(r.err).toBe('');
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.out);
    // The test machine is linux/amd64 (the registry helper and busybox run images assume it).
    expect(doc).toMatchObject({
      image: `${registry.host}/app:multi`,
      platform: 'linux/amd64',
      digest: children[0]!.digest,
      diffId: children[0]!.lifecycleMetadata.sbom?.sha,
      destDir: host,
      files: [SBOM_PATH, SPDX_PATH],
    });
    expect(doc.layerDigest).toMatch(/^sha256:/);
    expect(await readFile(join(host, SBOM_PATH), 'utf8')).toBe(sbomBytes('amd64'));

    const arm = join(root, 'out-arm');
    registry.resetCounters();
    const a = await runCli(
      'sbom',
      'download',
      `${registry.host}/app:multi`,
      '--remote',
      '--platform',
      'linux/arm64',
      '--insecure-registry',
      registry.host,
      '-o',
      arm,
    );
    expect(a.err).toBe('');
    expect(a.code).toBe(0);
    expect(await filesUnder(arm)).toEqual([SBOM_PATH, SPDX_PATH]);
    expect(await readFile(join(arm, SBOM_PATH), 'utf8')).toBe(sbomBytes('arm64'));
    expect(await readFile(join(arm, SPDX_PATH), 'utf8')).toBe(spdxBytes('arm64'));
    // Only the SBOM layer's blob and the config are fetched, never the other layers.
    const blobGets = registry.requests.filter((q) => q.kind === 'blob' && q.method === 'GET');
    expect(blobGets).toHaveLength(2);
  });

  it('defaults the output dir to the current directory, as pack does', async () => {
    const cwd = join(root, 'cwd');
    await mkdir(cwd, { recursive: true });
    const before = process.cwd();
    process.chdir(cwd);
    try {
      const r = await runCli('sbom', 'download', `${registry.host}/app:1`);
      expect(r.code).toBe(0);
    } finally {
      process.chdir(before);
    }
    expect(await readFile(join(cwd, SBOM_PATH), 'utf8')).toBe(sbomBytes('local'));
  });

  it('points at --remote when a bare image is not in the local layout', async () => {
    const r = await runCli('sbom', 'download', `${registry.host}/app:multi`, '-o', join(root, 'x'));
    expect(r.code).toBe(1);
    expect(r.err).toContain(
      `error: image ${registry.host}/app:multi not found at oci:${join(home, 'images')}`,
    );
    expect(r.err).toContain(`hint: if the image is in a registry, add --remote`);
  });

  it('fails clearly for an image without an SBOM and for a non-CNB image', async () => {
    const none = await runCli(
      'sbom',
      'download',
      `oci:${join(root, 'others')}:nosbom`,
      '-o',
      join(root, 'n'),
      '--json',
    );
    expect(none.code).toBe(1);
    const e = JSON.parse(none.err).error;
    expect(e.code).toBe('SBOM_NOT_FOUND');
    expect(e.message).toMatch(
      /has no SBOM: label io\.buildpacks\.lifecycle\.metadata records no "sbom" layer/,
    );
    const plain = await runCli(
      'sbom',
      'download',
      `oci:${join(root, 'others')}:plain`,
      '-o',
      join(root, 'n'),
    );
    expect(plain.code).toBe(1);
    expect(plain.err).toContain('has no io.buildpacks.lifecycle.metadata label: it is not a CNB app image');
    await expect(lstat(join(root, 'n'))).rejects.toThrow(/ENOENT/);
  });

  it('refuses SBOM layers that write outside layers/sbom or delete files', async () => {
    const others = await openLayoutStore(join(root, 'others'));
    const out = join(root, 'out-bad');
    await mkdir(join(out, 'layers', 'sbom', 'launch'), { recursive: true });
    await writeFile(join(out, 'layers', 'sbom', 'launch', 'precious.txt'), 'mine\n');
    await writeFile(join(out, 'layers', 'other.txt'), 'mine too\n');
    const refused: Record<string, string> = {
      outside: 'entry "etc" is outside layers/sbom/',
      whiteout: 'whiteout "layers/sbom/launch/.wh.precious.txt" refused',
      opaque: 'whiteout "layers/.wh..wh..opq" refused',
    };
    for (const [tag, message] of Object.entries(refused)) {
      const err = await downloadSbom({ store: others, target: tag, destDir: out }).catch((e: unknown) => e);
      expect(err, tag).toMatchObject({ code: 'UNSAFE_LAYER_ENTRY' });
      expect((err as Error).message, tag).toContain(message);
    }
    expect(await readFile(join(out, 'layers', 'sbom', 'launch', 'precious.txt'), 'utf8')).toBe('mine\n');
    expect(await readFile(join(out, 'layers', 'other.txt'), 'utf8')).toBe('mine too\n');
    await expect(lstat(join(out, 'etc'))).rejects.toThrow(/ENOENT/);
  });
});
