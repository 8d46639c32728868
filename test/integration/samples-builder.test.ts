import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { packfarmProcess, skopeoJson } from '../helpers/cli.js';
import { debianBaseImages } from '../helpers/base-images.js';
import { type TestRegistry, startRegistry } from '../helpers/registry.js';

/**
 * buildpacks/samples' own builders/noble/builder.toml, taken as it is from a samples checkout named by
 * PACKFARM_SAMPLES_DIR (nothing of the samples is committed here, and CI has no network to fetch them).
 * Only what cannot be reached offline is replaced, in a copy of the file next to the original:
 *   - the base images cnbs/sample-base-build:noble and cnbs/sample-base-run:noble → Debian 12 images made by
 *     base create (bash, coreutils, sed, grep: what the samples' hello buildpacks use) in a loopback registry;
 *   - docker://cnbs/sample-package:hello-universe → the same buildpackage made here by `packfarm buildpack
 *     package` from the samples' buildpacks/hello-universe/package.toml, for amd64 and arm64.
 * The relative `../../buildpacks/…` uris, the ids, versions, order and [[targets]] stay. The builder is
 * created for the file's own two targets and every label is compared, as text, with what pack v0.40 writes
 * for this file (pack's internal/builder and pkg/dist). Then an app is built for both arches: the java,
 * kotlin and ruby groups need downloads (and are amd64-only), so the app is one only the hello-universe
 * group detects, as offline as the rest.
 *
 * Checked by hand (the same flow with the CLI, plus podman running the app image on both arches) at
 * samples commit ff523267214af1a078afbcd6ed82fd55d56baba3 (2025-02-27), on 2026-11-30. pack itself refuses
 * this file's arm64 target (samples/java-maven, kotlin-gradle and ruby-bundler list only linux/amd64;
 * pack's builder validation checks each buildpack's targets); packfarm keeps them with a note, and the
 * detector fails their groups on arm64 as lifecycle does.
 *
 * Without PACKFARM_SAMPLES_DIR every test here is reported as skipped with SAMPLES_SKIP_NOTE; the same shape
 * with a fixture of our own always runs in builder-create.test.ts.
 */
const SAMPLES_CHECKED_COMMIT = 'ff523267214af1a078afbcd6ed82fd55d56baba3';
const SAMPLES_SKIP_NOTE = `needs a buildpacks/samples checkout: set PACKFARM_SAMPLES_DIR (git clone https://github.com/buildpacks/samples; checked at ${SAMPLES_CHECKED_COMMIT})`;

const _repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const samplesDir = process.env.PACKFARM_SAMPLES_DIR ? resolve(process.env.PACKFARM_SAMPLES_DIR) : undefined;

let root: string;
let registry: TestRegistry;
let samples: string;
let buildImage: string;
let runImage: string;
let packageRef: string;
let builderRef: string;
let localToml: string;

function packfarm(args: string[], cwd = root) {
  return packfarmProcess(args, { cwd, home: join(root, 'home') });
}

/** Replace `from` by `to` in `text`, which must hold it exactly once (else the samples have changed). */
function replaceOnce(text: string, from: string, to: string, file: string): string {
  const n = text.split(from).length - 1;
  if (n !== 1)
    throw new Error(
      `${file}: expected "${from}" once, found it ${n} times; the samples changed since ${SAMPLES_CHECKED_COMMIT}`,
    );
  return text.replace(from, to);
}

beforeAll(async () => {
  if (!samplesDir) return;
  root = await mkdtemp(join(tmpdir(), 'pf-samples-'));
  // A copy, so the checkout is never written to; what the builder reads keeps its relative layout.
  samples = join(root, 'samples');
  for (const d of ['builders', 'buildpacks', 'apps'])
    await cp(join(samplesDir, d), join(samples, d), { recursive: true });
  registry = await startRegistry({ proxy: false });
  buildImage = `${registry.host}/cnbs/sample-base-build:noble`;
  runImage = `${registry.host}/cnbs/sample-base-run:noble`;
  await debianBaseImages({
    arches: ['amd64', 'arm64'],
    buildTag: buildImage,
    runTag: runImage,
    buildPackages: ['bash', 'coreutils', 'sed', 'grep'],
    runPackages: ['bash', 'coreutils'],
    insecureRegistries: [registry.host],
  });
  packageRef = `${registry.host}/cnbs/sample-package:hello-universe`;
  const pkg = await packfarm([
    'buildpack',
    'package',
    packageRef,
    '--config',
    join(samples, 'buildpacks', 'hello-universe', 'package.toml'),
    '--target',
    'linux/amd64',
    '--target',
    'linux/arm64',
    '--publish',
    '--insecure-registry',
    registry.host,
  ]);
  if (pkg.exitCode !== 0) throw new Error(`buildpack package hello-universe: ${pkg.stderr}`);
  const original = join(samples, 'builders', 'noble', 'builder.toml');
  let text = await readFile(original, 'utf8');
  text = replaceOnce(text, '"cnbs/sample-base-build:noble"', `"${buildImage}"`, original);
  text = replaceOnce(text, '"cnbs/sample-base-run:noble"', `"${runImage}"`, original);
  text = replaceOnce(
    text,
    '"docker://cnbs/sample-package:hello-universe"',
    `"docker://${packageRef}"`,
    original,
  );
  localToml = join(samples, 'builders', 'noble', 'builder.local.toml');
  await writeFile(localToml, text);
  builderRef = `${registry.host}/cnbs/sample-builder:noble`;
});

afterAll(async () => {
  await registry?.stop();
  if (root) await rm(root, { recursive: true, force: true });
});

const samplesHome = (bp: string) => `https://github.com/buildpacks/samples/tree/main/buildpacks/${bp}`;

describe('buildpacks/samples builders/noble/builder.toml', () => {
  it('is accepted with only its base images and docker:// buildpackage replaced; labels as pack writes them', async (ctx) => {
    if (!samplesDir) return ctx.skip(SAMPLES_SKIP_NOTE);
    const r = await packfarm([
      'builder',
      'create',
      builderRef,
      '--config',
      localToml,
      '--publish',
      '--insecure-registry',
      registry.host,
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    for (const bp of ['java-maven@0.0.3', 'kotlin-gradle@0.0.3', 'ruby-bundler@0.0.2'])
      expect(r.stderr).toContain(
        `linux/arm64: buildpack samples/${bp} (linux/amd64) does not support this target`,
      );

    const index = await skopeoJson('--raw', `docker://${builderRef}`);
    expect((index.manifests as { platform: unknown }[]).map((m) => m.platform)).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux' },
    ]);

    for (const arch of ['amd64', 'arm64'] as const) {
      const cfg = await skopeoJson('--config', '--override-arch', arch, `docker://${builderRef}`);
      const labels = (cfg.config as { Labels: Record<string, string> }).Labels;
      const diffIds = (cfg.rootfs as { diff_ids: string[] }).diff_ids;
      const pkg = await skopeoJson('--config', '--override-arch', arch, `docker://${packageRef}`);
      expect(
        (pkg.config as { Labels: Record<string, string> }).Labels['io.buildpacks.buildpackage.metadata'],
      ).toBe(
        JSON.stringify({
          id: 'samples/hello-universe',
          name: 'Hello Universe Buildpack',
          version: '0.0.2',
          homepage: samplesHome('hello-universe'),
          stacks: [{ id: '*' }],
        }),
      );
      const pkgLayers = JSON.parse(
        (pkg.config as { Labels: Record<string, string> }).Labels['io.buildpacks.buildpack.layers']!,
      ) as Record<string, Record<string, { layerDiffID: string }>>;
      const built = JSON.parse(labels['io.buildpacks.buildpack.layers']!) as Record<
        string,
        Record<string, { layerDiffID: string }>
      >;
      const diffId = (id: string, v: string) => built[`samples/${id}`]?.[v]?.layerDiffID;
      const fromPackage = (id: string) => pkgLayers[`samples/${id}`]?.['0.0.2']?.layerDiffID;

      expect(Object.keys(labels).sort()).toEqual([
        'io.buildpacks.base.distro.name',
        'io.buildpacks.base.distro.version',
        'io.buildpacks.base.id',
        'io.buildpacks.builder.metadata',
        'io.buildpacks.buildpack.layers',
        'io.buildpacks.buildpack.order',
        'io.buildpacks.buildpack.order-extensions',
        'io.buildpacks.extension.layers',
        'io.buildpacks.stack.id',
        'io.buildpacks.stack.mixins',
      ]);
      const info = (bp: string, id: string, name: string, version: string) => ({
        id: `samples/${id}`,
        name,
        version,
        homepage: samplesHome(bp),
      });
      expect(labels['io.buildpacks.builder.metadata']).toBe(
        JSON.stringify({
          description: '',
          // [[buildpacks]] order; the buildpackage's entry buildpack, then its others sorted by id.
          buildpacks: [
            info('java-maven', 'java-maven', 'Sample Java Maven Buildpack', '0.0.3'),
            info('kotlin-gradle', 'kotlin-gradle', 'Sample Kotlin Gradle Buildpack', '0.0.3'),
            info('ruby-bundler', 'ruby-bundler', 'Sample Ruby Buildpack', '0.0.2'),
            info('hello-universe', 'hello-universe', 'Hello Universe Buildpack', '0.0.2'),
            info('hello-moon', 'hello-moon', 'Hello Moon Buildpack', '0.0.2'),
            info('hello-world', 'hello-world', 'Hello World Buildpack', '0.0.2'),
          ],
          extensions: null,
          stack: { runImage: { image: '', mirrors: null } },
          lifecycle: {
            version: '0.1.0',
            api: { buildpack: '0.12', platform: '0.15' },
            apis: {
              buildpack: { deprecated: [], supported: ['0.9', '0.10', '0.11', '0.12'] },
              platform: { deprecated: [], supported: ['0.12', '0.13', '0.14', '0.15'] },
            },
          },
          createdBy: { name: 'packfarm', version: '0.1.0' },
          images: [{ image: runImage, mirrors: null }],
        }),
      );
      expect(labels['io.buildpacks.buildpack.order']).toBe(
        JSON.stringify([
          { group: [{ id: 'samples/java-maven', version: '0.0.3' }] },
          { group: [{ id: 'samples/kotlin-gradle', version: '0.0.3' }] },
          { group: [{ id: 'samples/ruby-bundler', version: '0.0.2' }] },
          { group: [{ id: 'samples/hello-universe', version: '0.0.2' }] },
        ]),
      );
      const amd64 = [{ os: 'linux', arch: 'amd64' }];
      const linux = [{ os: 'linux', arch: '' }];
      const entry = (bp: string, name: string, extra: Record<string, unknown>, layerDiffID?: string) => ({
        api: '0.11',
        ...extra,
        layerDiffID,
        homepage: samplesHome(bp),
        name,
      });
      expect(labels['io.buildpacks.buildpack.layers']).toBe(
        JSON.stringify({
          'samples/hello-moon': {
            '0.0.2': entry(
              'hello-moon',
              'Hello Moon Buildpack',
              { targets: linux },
              fromPackage('hello-moon'),
            ),
          },
          'samples/hello-universe': {
            '0.0.2': entry(
              'hello-universe',
              'Hello Universe Buildpack',
              {
                order: [
                  {
                    group: [
                      { id: 'samples/hello-world', version: '0.0.2' },
                      { id: 'samples/hello-moon', version: '0.0.2' },
                    ],
                  },
                ],
              },
              fromPackage('hello-universe'),
            ),
          },
          'samples/hello-world': {
            '0.0.2': entry(
              'hello-world',
              'Hello World Buildpack',
              { targets: linux },
              fromPackage('hello-world'),
            ),
          },
          'samples/java-maven': {
            '0.0.3': entry(
              'java-maven',
              'Sample Java Maven Buildpack',
              { targets: amd64 },
              diffId('java-maven', '0.0.3'),
            ),
          },
          'samples/kotlin-gradle': {
            '0.0.3': entry(
              'kotlin-gradle',
              'Sample Kotlin Gradle Buildpack',
              { targets: amd64 },
              diffId('kotlin-gradle', '0.0.3'),
            ),
          },
          'samples/ruby-bundler': {
            '0.0.2': entry(
              'ruby-bundler',
              'Sample Ruby Buildpack',
              { targets: amd64 },
              diffId('ruby-bundler', '0.0.2'),
            ),
          },
        }),
      );
      for (const v of Object.values(built))
        for (const i of Object.values(v)) expect(diffIds).toContain(i.layerDiffID);
      expect(labels['io.buildpacks.buildpack.order-extensions']).toBe('null');
      expect(labels['io.buildpacks.extension.layers']).toBe('{}');
      expect(labels['io.buildpacks.stack.mixins']).toBe('null');
      expect(labels['io.buildpacks.stack.id']).toBe('io.packfarm.debian-12');
    }
  });

  it('builds an app with the builder on amd64 and arm64 (the hello-universe group)', async (ctx) => {
    if (!samplesDir) return ctx.skip(SAMPLES_SKIP_NOTE);
    // The bash-script sample app without its project.toml (which names its own buildpack instead).
    const app = join(root, 'app');
    await mkdir(app, { recursive: true });
    await cp(join(samples, 'apps', 'bash-script', 'app.sh'), join(app, 'app.sh'));
    const ref = `${registry.host}/apps/hello-universe:1`;
    const r = await packfarm([
      'build',
      ref,
      '--path',
      app,
      '--builder',
      `docker://${builderRef}`,
      '--platform',
      'linux/amd64,linux/arm64',
      '--publish',
      '--insecure-registry',
      registry.host,
    ]);
    const out = r.stdout + r.stderr;
    expect(r.exitCode, out).toBe(0);
    for (const p of ['linux/amd64', 'linux/arm64']) {
      expect(out).toContain(`[${p}] ---> Hello World buildpack`);
      expect(out).toContain(`[${p}] ---> Hello Moon buildpack`);
    }
    expect(out).toContain('[linux/arm64] unable to satisfy target constraints');
    const index = await skopeoJson('--raw', `docker://${ref}`);
    expect((index.manifests as { platform: unknown }[]).map((m) => m.platform)).toEqual([
      { architecture: 'amd64', os: 'linux' },
      { architecture: 'arm64', os: 'linux' },
    ]);
  });
});
