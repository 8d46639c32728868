import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { isPackfarmError } from '../util/errors.js';
import type { LayerTypes } from './layers.js';
import {
  collectSbomFiles,
  copySbomFiles,
  normalizeMediaType,
  parseSbomFileName,
  sbomDestination,
} from './sbom.js';

const t = (launch: boolean, build: boolean, cache: boolean): LayerTypes => ({ launch, build, cache });

describe('parseSbomFileName', () => {
  it('splits owner and extension', () => {
    expect(parseSbomFileName('launch.sbom.cdx.json')).toEqual({ owner: 'launch', ext: 'cdx.json' });
    expect(parseSbomFileName('my.layer.sbom.spdx.json')).toEqual({ owner: 'my.layer', ext: 'spdx.json' });
    expect(parseSbomFileName('node.toml')).toBeUndefined();
  });
  it('normalises declared media types', () => {
    expect(normalizeMediaType(' Application/SPDX+json; charset=utf-8')).toBe('application/spdx+json');
  });
});

describe('collectSbomFiles / copySbomFiles', () => {
  let layers: string;
  let bpDir: string;
  beforeEach(async () => {
    layers = await mkdtemp(join(tmpdir(), 'pf-sbom-'));
    bpDir = join(layers, 'my_bp');
    await mkdir(bpDir);
  });
  afterEach(async () => {
    await rm(layers, { recursive: true, force: true });
  });

  it('places launch, build and layer SBOMs; cached layers also go to cache', async () => {
    for (const f of [
      'launch.sbom.cdx.json',
      'build.sbom.syft.json',
      'run.sbom.cdx.json',
      'tools.sbom.cdx.json',
    ])
      await writeFile(join(bpDir, f), `{"f":"${f}"}`);
    await writeFile(join(bpDir, 'orphan.sbom.cdx.json'), '{}');
    const placements = await collectSbomFiles({
      bpLayersDir: bpDir,
      buildpackId: 'my/bp',
      sbomFormats: ['application/vnd.cyclonedx+json', 'application/vnd.syft+json'],
      layers: new Map([
        ['run', t(true, false, true)],
        ['tools', t(false, true, false)],
      ]),
    });
    expect(placements.map((p) => [p.kind, p.layerName ?? '-', p.ext])).toEqual([
      ['build', '-', 'syft.json'],
      ['launch', '-', 'cdx.json'],
      ['launch', 'run', 'cdx.json'],
      ['cache', 'run', 'cdx.json'],
      ['build', 'tools', 'cdx.json'],
    ]);
    await copySbomFiles(layers, placements);
    const dest = sbomDestination(layers, placements[2]!);
    expect(dest).toBe(join(layers, 'sbom', 'launch', 'my_bp', 'run', 'sbom.cdx.json'));
    expect(await readFile(dest, 'utf8')).toBe('{"f":"run.sbom.cdx.json"}');
    expect(await readFile(join(layers, 'sbom', 'build', 'my_bp', 'sbom.syft.json'), 'utf8')).toContain(
      'build.sbom',
    );
  });

  it('fails when the media type is not declared in sbom-formats', async () => {
    await writeFile(join(bpDir, 'launch.sbom.spdx.json'), '{}');
    const err = await collectSbomFiles({
      bpLayersDir: bpDir,
      buildpackId: 'my/bp',
      sbomFormats: ['application/vnd.cyclonedx+json'],
      layers: new Map(),
    }).catch((e: unknown) => e);
    expect(isPackfarmError(err, 'SBOM_UNDECLARED_FORMAT')).toBe(true);
    expect((err as Error).message).toContain('launch.sbom.spdx.json');
    expect((err as Error).message).toContain('application/spdx+json');
  });

  it('fails on an unknown SBOM extension', async () => {
    await writeFile(join(bpDir, 'launch.sbom.xml'), '<x/>');
    await expect(
      collectSbomFiles({ bpLayersDir: bpDir, buildpackId: 'b', sbomFormats: [], layers: new Map() }),
    ).rejects.toThrow(/unsupported SBOM file extension \.xml/);
  });
});
