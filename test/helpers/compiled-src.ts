import { randomBytes } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';

const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');

/**
 * A fresh JavaScript copy of src/ for tests that need our code in *other processes* (unit tests run from the
 * TypeScript sources, which plain `node` cannot load). Files are transpiled one by one (no type check, which
 * tsc does elsewhere) into a directory under node_modules/.cache so package imports resolve to the
 * repository's node_modules. Call `cleanup()` when done.
 */
export async function compileSrcForChildProcesses(): Promise<{ dir: string; cleanup: () => Promise<void> }> {
  const dir = join(
    repoRoot,
    'node_modules',
    '.cache',
    `packfarm-src-${process.pid}-${randomBytes(4).toString('hex')}`,
  );
  const srcRoot = join(repoRoot, 'src');
  const files = (await readdir(srcRoot, { recursive: true }))
    .map(String)
    .filter((f) => f.endsWith('.ts') && !f.endsWith('.test.ts') && !f.endsWith('.d.ts'));
  for (const file of files) {
    const source = await readFile(join(srcRoot, file), 'utf8');
    const out = ts.transpileModule(source, {
      compilerOptions: {
        module: ts.ModuleKind.ES2022,
        target: ts.ScriptTarget.ES2023,
        verbatimModuleSyntax: true,
      },
      fileName: file,
    });
    const target = join(dir, relative('.', file).replace(/\.ts$/, '.js'));
    await mkdir(dirname(target), { recursive: true });
    await writeFile(target, out.outputText);
  }
  // Inside node_modules no package.json above applies, so say these files are ES modules.
  await writeFile(join(dir, 'package.json'), '{"type":"module"}\n');
  return { dir, cleanup: () => rm(dir, { recursive: true, force: true }) };
}
