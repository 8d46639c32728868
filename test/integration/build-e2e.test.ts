import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { parseToml } from '../../src/util/toml.js';
import { compileSrcForChildProcesses } from '../helpers/compiled-src.js';

/**
 * detector then builder as separate `packfarm lifecycle` processes, the way a platform runs the phases:
 * group.toml and plan.toml pass between them on disk, metadata.toml comes out.
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const buildpacksDir = join(repoRoot, 'test', 'fixtures', 'buildpacks', 'build');
const appFixture = join(repoRoot, 'test', 'fixtures', 'apps', 'build-basic');

let root: string;
let compiled: { dir: string; cleanup: () => Promise<void> };
beforeAll(async () => {
  root = await mkdtemp(join(tmpdir(), 'packfarm-build-e2e-'));
  compiled = await compileSrcForChildProcesses();
});
afterAll(async () => {
  await rm(root, { recursive: true, force: true });
  await compiled?.cleanup();
});

async function lifecycle(phase: string, args: string[], env: Record<string, string>) {
  const main = pathToFileURL(join(compiled.dir, 'cli', 'main.js')).href;
  const script = `import { main } from ${JSON.stringify(main)}; process.exitCode = await main(process.argv.slice(1));`;
  return execa(process.execPath, ['--input-type=module', '-e', script, 'lifecycle', phase, ...args], {
    env,
    extendEnv: false,
    reject: false,
  });
}

describe('packfarm lifecycle detector + builder (separate processes)', () => {
  it('detects a group, passes plan entries on and writes metadata.toml', async () => {
    const app = join(root, 'workspace');
    const layers = join(root, 'layers');
    const platform = join(root, 'platform');
    await cp(appFixture, app, { recursive: true });
    await mkdir(join(platform, 'env'), { recursive: true });
    await writeFile(join(platform, 'env', 'UNMET'), '1');
    await mkdir(layers, { recursive: true });
    await writeFile(
      join(layers, 'analyzed.toml'),
      '[run-image]\nreference = ""\n[run-image.target]\nos = "linux"\narch = "amd64"\n',
    );
    const order = join(root, 'order.toml');
    await writeFile(
      order,
      ['test/dep-provider', 'test/dep-taker', 'test/processes']
        .map((id) => `[[order.group]]\nid = "${id}"\nversion = "1.0.0"\n`)
        .join('\n')
        .replace(/^/, '[[order]]\n'),
    );
    const env = {
      PATH: process.env.PATH ?? '/usr/bin:/bin',
      HOME: root,
      CNB_PLATFORM_API: '0.14',
      CNB_APP_DIR: app,
      CNB_LAYERS_DIR: layers,
      CNB_PLATFORM_DIR: platform,
      CNB_BUILDPACKS_DIR: buildpacksDir,
    };

    const detect = await lifecycle('detector', ['-order', order], env);
    expect(detect.stderr).not.toMatch(/error/i);
    expect(detect.exitCode).toBe(0);
    const groupToml = parseToml(await readFile(join(layers, 'group.toml'), 'utf8'), 'group.toml');
    expect((groupToml.group as { id: string }[]).map((g) => g.id)).toEqual([
      'test/dep-provider',
      'test/dep-taker',
      'test/processes',
    ]);

    const b = await lifecycle('builder', [], env);
    expect(b.stderr).toBe('');
    expect(b.exitCode).toBe(0);

    // dep-provider left "dep" unmet (platform env UNMET), so the taker got it.
    expect(await readFile(join(layers, 'test_dep-taker', 'received-plan'), 'utf8')).toContain('name = "dep"');

    const md = parseToml(await readFile(join(layers, 'config', 'metadata.toml'), 'utf8'), 'metadata.toml');
    expect(md).toEqual({
      'buildpack-default-process-type': 'web',
      buildpacks: [
        { id: 'test/dep-provider', version: '1.0.0', api: '0.12' },
        { id: 'test/dep-taker', version: '1.0.0', api: '0.12' },
        { id: 'test/processes', version: '1.0.0', api: '0.12' },
      ],
      processes: [
        {
          type: 'web',
          command: ['runtime', '--serve'],
          args: ['8080'],
          direct: true,
          'buildpack-id': 'test/processes',
          'working-dir': '/workspace/sub',
        },
        {
          type: 'worker',
          command: ['runtime'],
          args: ['--work'],
          direct: true,
          'buildpack-id': 'test/processes',
          'exec-env': ['production', 'test'],
        },
      ],
      slices: [{ paths: ['static/*'] }],
      labels: [{ key: 'io.packfarm.test.label', value: 'from-processes' }],
    });
  });
});
