import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, chown, mkdir, mkdtemp, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { openLayoutStore } from '../../src/image/layout-store.js';
import { createRunImage } from '../helpers/run-image.js';

/**
 * Nothing a user can put in an app dir or its project.toml makes packfarm fail with "internal error": each
 * hostile app dir below either builds, or fails with a clear error naming the file and saying why. Runs
 * `packfarm build` as a process; the unreadable cases run it as `nobody` (tests run as root, who can read
 * everything), through setpriv(1).
 */
const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
const NOBODY = 65534;

let root: string;
let runImage: string;
let buildpack: string;
/** bin/packfarm.js of the copy nobody runs (see beforeAll). */
let nobodyBin: string;
beforeAll(async () => {
  const tsc = spawnSync('npx', ['tsc', '-p', 'tsconfig.build.json'], { cwd: repoRoot, encoding: 'utf8' });
  if (!existsSync(join(repoRoot, 'dist', 'cli', 'main.js')))
    throw new Error(`building dist/ failed:\n${tsc.stdout}\n${tsc.stderr}`);
  if (spawnSync('setpriv', ['--version']).status !== 0)
    throw new Error(
      'setpriv(1) is missing: apt-get install util-linux (it runs the unreadable-file cases as nobody)',
    );
  root = await mkdtemp(join(tmpdir(), 'pf-hostile-app-'));
  // nobody must reach the run image, the buildpack and its own home and outputs below root.
  await chmod(root, 0o755);
  // nobody runs packfarm from a copy below root (hard links where the filesystem allows): the checkout may sit
  // below a directory only root can enter, as a clone into `mktemp -d` (mode 0700) does.
  const program = join(root, 'program');
  await mkdir(program);
  for (const part of ['bin', 'dist', 'node_modules', 'package.json']) {
    const from = join(repoRoot, part);
    if (spawnSync('cp', ['-al', from, program]).status !== 0) {
      const copied = spawnSync('cp', ['-a', from, program], { encoding: 'utf8' });
      if (copied.status !== 0) throw new Error(`copying ${from} for nobody failed: ${copied.stderr}`);
    }
  }
  spawnSync('find', [program, '-type', 'd', '-exec', 'chmod', 'a+rx', '{}', '+']);
  nobodyBin = join(program, 'bin', 'packfarm.js');
  const runDir = join(root, 'run');
  await createRunImage({ store: await openLayoutStore(runDir, { create: true }), tag: 'latest' });
  spawnSync('chmod', ['-R', 'a+rX', runDir]);
  runImage = `oci:${runDir}:latest`;
  buildpack = join(root, 'bp');
  await mkdir(join(buildpack, 'bin'), { recursive: true });
  await writeFile(
    join(buildpack, 'buildpack.toml'),
    'api = "0.10"\n[buildpack]\nid = "test/anything"\nversion = "1.0.0"\n[[targets]]\nos = "linux"\n',
  );
  await writeFile(join(buildpack, 'bin', 'detect'), '#!/bin/sh\nexit 0\n', { mode: 0o755 });
  await writeFile(
    join(buildpack, 'bin', 'build'),
    '#!/bin/sh\nprintf \'[[processes]]\\ntype = "web"\\ncommand = ["true"]\\ndefault = true\\n\' > "$1/launch.toml"\n',
    { mode: 0o755 },
  );
}, 180_000);
afterAll(() => {
  // rm(1): the tree deeper than PATH_MAX cannot be removed by absolute paths.
  if (root) spawnSync('rm', ['-rf', root]);
});

interface Run {
  code: number | null;
  out: string;
}

function packfarmBuild(app: string, name: string, asNobody: boolean): Promise<Run> {
  const home = join(root, `home-${name}`);
  const args = ['build', `oci:${join(root, 'out', name)}:app`, '--path', app, '--buildpack', buildpack];
  args.push('--run-image', runImage);
  const argv = asNobody
    ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', nobodyBin, ...args]
    : [join(repoRoot, 'bin', 'packfarm.js'), ...args];
  return new Promise((done, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, HOME: home, PACKFARM_HOME: home },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c) => {
      out += c;
    });
    child.stderr.on('data', (c) => {
      out += c;
    });
    child.on('error', reject);
    child.on('close', (code) => done({ code, out }));
  });
}

interface Case {
  name: string;
  /** Fill the app dir. */
  make(app: string): Promise<void>;
  asNobody?: boolean;
  /** undefined: it builds; otherwise the error must match (and name the file). */
  error?: RegExp;
}

const file = (app: string, rel: string, text = 'x\n') =>
  mkdir(dirname(join(app, rel)), { recursive: true }).then(() => writeFile(join(app, rel), text));

const cases: Case[] = [
  {
    name: 'a file name that is not UTF-8',
    make: async (app) => {
      await file(app, 'ok.txt');
      await mkdir(join(app, 'sub'));
      await writeFile(
        Buffer.concat([Buffer.from(`${app}/sub/bad`), Buffer.from([0xff, 0xfe]), Buffer.from('.txt')]),
        'x',
      );
    },
    error: /sub\/bad\\xff\\xfe\.txt: the file name is not valid UTF-8/,
  },
  {
    name: 'an unreadable file',
    asNobody: true,
    make: async (app) => {
      await file(app, 'ok.txt');
      await file(app, 'secret/key.pem');
      await chmod(join(app, 'secret', 'key.pem'), 0o000);
    },
    error: /secret\/key\.pem: cannot read this app file: permission denied/,
  },
  {
    name: 'an unreadable directory',
    asNobody: true,
    make: async (app) => {
      await file(app, 'ok.txt');
      await file(app, 'private/notes.txt');
      await chmod(join(app, 'private'), 0o000);
    },
    error: /private: cannot read this app directory: EACCES/,
  },
  {
    name: 'a socket',
    make: async (app) => {
      await file(app, 'ok.txt');
      const server = createServer();
      await new Promise<void>((r) => server.listen(join(app, 'app.sock'), () => r()));
      // Closing removes the socket file: keep it listening for the build, close afterwards.
      sockets.push(server);
    },
  },
  {
    name: 'a FIFO (nobody writes to it: reading it would hang)',
    make: async (app) => {
      await file(app, 'ok.txt');
      spawnSync('mkfifo', [join(app, 'pipe')]);
    },
  },
  {
    name: 'symlink loops',
    make: async (app) => {
      await file(app, 'ok.txt');
      await symlink('b', join(app, 'a'));
      await symlink('a', join(app, 'b'));
      await symlink('self', join(app, 'self'));
      await mkdir(join(app, 'dir'));
      await symlink('..', join(app, 'dir', 'up'));
    },
  },
  {
    name: 'very long names',
    make: async (app) => {
      await file(app, 'n'.repeat(255));
      // Nested past PATH_MAX (4096) in 200-byte components, made by relative steps.
      const part = 'd'.repeat(200);
      spawnSync('sh', [
        '-c',
        `cd "${app}" && for i in $(seq 1 22); do mkdir ${part} && cd ${part}; done && echo deep > f`,
      ]);
    },
    error: /cannot read this app (directory|entry): ENAMETOOLONG/,
  },
  {
    name: '100k files',
    make: async (app) => {
      spawnSync('sh', [
        '-c',
        `cd "${app}" && for d in $(seq 1 100); do mkdir d$d; (cd d$d && seq 1 1000 | xargs touch); done`,
      ]);
    },
  },
  {
    name: 'a project.toml that is not TOML',
    make: async (app) => {
      await file(app, 'project.toml', 'this is [not toml\n');
    },
    error: /project\.toml/,
  },
  {
    name: 'a project.toml with fields of the wrong type',
    make: async (app) => {
      await file(
        app,
        'project.toml',
        '[_]\nschema-version = 7\n[io.buildpacks]\nexclude = "not-a-list"\n[[io.buildpacks.build.env]]\nname = 3\n',
      );
    },
    error: /project\.toml/,
  },
];
const sockets: Array<ReturnType<typeof createServer>> = [];

describe('hostile app dirs: a build or a clear error, never "internal error"', () => {
  it.each(cases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const app = join(root, 'apps', c.name.replace(/\W+/g, '-'));
    await mkdir(app, { recursive: true });
    try {
      await c.make(app);
      if (c.asNobody) {
        // nobody owns its app (files made unreadable above stay so: chown keeps their mode), home and outputs.
        spawnSync('chown', ['-R', `${NOBODY}:${NOBODY}`, app]);
        for (const dir of [join(root, 'out'), join(root, `home-${c.name.replace(/\W+/g, '-')}`)]) {
          await mkdir(dir, { recursive: true });
          await chown(dir, NOBODY, NOBODY);
        }
      }
      const r = await packfarmBuild(app, c.name.replace(/\W+/g, '-'), c.asNobody === true);
      expect(r.out).not.toMatch(/internal error/);
      if (c.error) {
        expect(r.code, r.out).toBe(1);
        expect(r.out).toMatch(c.error);
      } else {
        expect(r.out).toMatch(/Successfully built image/);
        expect(r.code, r.out).toBe(0);
      }
    } finally {
      for (const s of sockets.splice(0)) s.close();
    }
  });
});

function runPackfarm(args: string[], env: NodeJS.ProcessEnv, asNobody: boolean): Promise<Run> {
  const argv = asNobody
    ? ['setpriv', `--reuid=${NOBODY}`, `--regid=${NOBODY}`, '--clear-groups', '--', nobodyBin, ...args]
    : [join(repoRoot, 'bin', 'packfarm.js'), ...args];
  return new Promise((done, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      env: { PATH: `${dirname(process.execPath)}:/usr/bin:/bin`, ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    child.stdout.on('data', (c) => {
      out += c;
    });
    child.stderr.on('data', (c) => {
      out += c;
    });
    child.on('error', reject);
    child.on('close', (code) => done({ code, out }));
  });
}

interface DataDirCase {
  name: string;
  /** The environment, made under `dir` (a fresh dir of the case). */
  make(dir: string): Promise<NodeJS.ProcessEnv>;
  asNobody?: boolean;
  /** What the error must say: the path, the variable it came from and what was expected. */
  error: (dir: string) => RegExp;
}

const esc = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');

const dataDirCases: DataDirCase[] = [
  {
    name: 'PACKFARM_HOME is a file',
    make: async (dir) => {
      await writeFile(join(dir, 'home'), 'x');
      return { HOME: dir, PACKFARM_HOME: join(dir, 'home') };
    },
    error: (dir) =>
      new RegExp(
        `data dir ${esc(join(dir, 'home'))}, from \\$PACKFARM_HOME, cannot be made: ${esc(join(dir, 'home'))} is a file, where a directory was expected`,
      ),
  },
  {
    name: 'PACKFARM_HOME lies under a file',
    make: async (dir) => {
      await writeFile(join(dir, 'file'), 'x');
      return { HOME: dir, PACKFARM_HOME: join(dir, 'file', 'a', 'b') };
    },
    error: (dir) =>
      new RegExp(
        `from \\$PACKFARM_HOME, cannot be made: ${esc(join(dir, 'file'))} is a file, where a directory`,
      ),
  },
  {
    name: 'PACKFARM_HOME is a directory the user cannot write',
    make: async (dir) => {
      await mkdir(join(dir, 'home'), { mode: 0o755 });
      return { HOME: dir, PACKFARM_HOME: join(dir, 'home') };
    },
    asNobody: true,
    error: (dir) =>
      new RegExp(
        `data dir ${esc(join(dir, 'home'))}, from \\$PACKFARM_HOME, is not writable by this user \\(uid ${NOBODY}\\), where a writable directory was expected`,
      ),
  },
  {
    name: 'PACKFARM_HOME cannot be created (parent not writable)',
    make: async (dir) => ({ HOME: dir, PACKFARM_HOME: join(dir, 'new', 'home') }),
    asNobody: true,
    error: (dir) =>
      new RegExp(
        `from \\$PACKFARM_HOME, cannot be made: permission denied creating ${esc(join(dir, 'new'))}`,
      ),
  },
  {
    name: 'XDG_DATA_HOME is a file',
    make: async (dir) => {
      await writeFile(join(dir, 'xdg'), 'x');
      return { HOME: dir, XDG_DATA_HOME: join(dir, 'xdg') };
    },
    error: (dir) =>
      new RegExp(
        `data dir ${esc(join(dir, 'xdg', 'packfarm'))}, from \\$XDG_DATA_HOME/packfarm \\(XDG_DATA_HOME=${esc(join(dir, 'xdg'))}\\), cannot be made: ${esc(join(dir, 'xdg'))} is a file`,
      ),
  },
  {
    name: '~/.local is a file (neither variable set)',
    make: async (dir) => {
      await writeFile(join(dir, '.local'), 'x');
      return { HOME: dir };
    },
    error: (dir) =>
      new RegExp(
        `from ~/\\.local/share/packfarm \\(HOME=${esc(dir)}; neither PACKFARM_HOME nor XDG_DATA_HOME is set\\), cannot be made: ${esc(join(dir, '.local'))} is a file`,
      ),
  },
];

describe('an unusable data dir (PACKFARM_HOME, XDG_DATA_HOME, HOME): DATA_DIR_UNUSABLE naming it', () => {
  it.each(dataDirCases.map((c) => [c.name, c] as const))('%s', async (_name, c) => {
    const dir = join(root, 'data-dirs', c.name.replace(/\W+/g, '-'));
    await mkdir(dir, { recursive: true });
    const env = await c.make(dir);
    const app = join(dir, 'app');
    await mkdir(app);
    await writeFile(join(app, 'hello.txt'), 'hi\n');
    if (c.asNobody) await chown(app, NOBODY, NOBODY);
    const commands = [
      ['build', 'app', '--path', app, '--buildpack', buildpack, '--run-image', runImage],
      ['manifest', 'create', 'registry.example/app:1'],
      ['manifest', 'create', 'registry.example/app:1', '--json'],
    ];
    for (const args of commands) {
      const r = await runPackfarm(args, env, c.asNobody === true);
      expect(r.out).not.toMatch(/internal error/);
      expect(r.code, r.out).toBe(1);
      if (args.includes('--json')) expect(JSON.parse(r.out).error.code).toBe('DATA_DIR_UNUSABLE');
      else expect(r.out).toMatch(c.error(dir));
    }
  });
});
