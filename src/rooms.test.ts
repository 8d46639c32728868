import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import ts from 'typescript';
import { describe, expect, it } from 'vitest';

/**
 * The rooms of src/ and the way data flows through them (the design's room table): each room lists the rooms
 * it must not import. `util/` is the shared floor every room may use. Data flows one way, so beyond this table
 * the room graph must have no cycle, and no module may import itself through others.
 */
const FORBIDDEN: Readonly<Record<string, readonly string[]>> = {
  // oci/ and archive/ import nothing of ours but each other's vocabulary (and util/).
  util: ['*'],
  oci: ['*'],
  archive: ['*', '!oci'],
  registry: ['buildpack', 'farm', 'phase', 'cli', 'api'],
  image: ['buildpack', 'farm', 'phase', 'cli', 'api'],
  buildpack: ['image', 'farm', 'platform', 'phase', 'cli', 'api'],
  platform: ['farm', 'phase', 'cli', 'api'],
  phase: ['cli', 'farm', 'api'],
  launch: ['farm', 'phase', 'cli', 'api'],
  cache: ['cli', 'phase', 'buildpack', 'api'],
  exec: ['image', 'buildpack', 'phase', 'cli', 'api'],
  farm: ['cli'],
  builder: ['farm', 'cli', 'api'],
  api: ['cli'],
  cli: [],
  'index.ts': ['cli'],
};

const SRC = dirname(fileURLToPath(import.meta.url));

type Graph = Map<string, Set<string>>;

/** Every non-test module of src/ with the src/ modules it imports (static, re-exported and dynamic imports). */
function readImportGraph(root: string): Graph {
  const files: string[] = [];
  const walk = (dir: string) => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      const p = join(dir, e.name);
      if (e.isDirectory()) walk(p);
      else if (p.endsWith('.ts') && !p.endsWith('.test.ts') && !p.endsWith('.d.ts')) files.push(p);
    }
  };
  walk(root);
  const graph: Graph = new Map();
  for (const file of files) {
    const info = ts.preProcessFile(readFileSync(file, 'utf8'), true, true);
    const targets = new Set<string>();
    for (const { fileName } of info.importedFiles) {
      if (!fileName.startsWith('.')) continue;
      targets.add(relative(root, resolve(dirname(file), fileName.replace(/\.js$/, '.ts'))));
    }
    graph.set(relative(root, file), targets);
  }
  return graph;
}

const roomOf = (module: string) => (module.includes('/') ? module.slice(0, module.indexOf('/')) : module);

function isForbidden(from: string, to: string): boolean {
  const rules = FORBIDDEN[from];
  if (rules === undefined) throw new Error(`room ${from}/ is not in the room table of src/rooms.test.ts`);
  if (rules.includes(`!${to}`)) return false;
  return rules.includes(to) || rules.includes('*');
}

/** The cycles of a graph: each strongly connected component of more than one node, or a node on itself. */
function findCycles(graph: Graph): string[][] {
  let next = 0;
  const index = new Map<string, number>();
  const low = new Map<string, number>();
  const stack: string[] = [];
  const onStack = new Set<string>();
  const cycles: string[][] = [];
  const visit = (v: string) => {
    index.set(v, next);
    low.set(v, next);
    next++;
    stack.push(v);
    onStack.add(v);
    for (const w of graph.get(v) ?? []) {
      if (!graph.has(w)) continue;
      if (!index.has(w)) {
        visit(w);
        low.set(v, Math.min(low.get(v)!, low.get(w)!));
      } else if (onStack.has(w)) low.set(v, Math.min(low.get(v)!, index.get(w)!));
    }
    if (low.get(v) === index.get(v)) {
      const scc: string[] = [];
      let w: string;
      do {
        w = stack.pop()!;
        onStack.delete(w);
        scc.push(w);
      } while (w !== v);
      if (scc.length > 1 || graph.get(v)?.has(v)) cycles.push(scc.sort());
    }
  };
  for (const v of graph.keys()) if (!index.has(v)) visit(v);
  return cycles;
}

function roomGraph(graph: Graph): { rooms: Graph; edges: Map<string, string[]> } {
  const rooms: Graph = new Map();
  const edges = new Map<string, string[]>();
  for (const [from, targets] of graph) {
    const a = roomOf(from);
    if (!rooms.has(a)) rooms.set(a, new Set());
    for (const to of targets) {
      const b = roomOf(to);
      if (a === b) continue;
      rooms.get(a)!.add(b);
      const key = `${a} → ${b}`;
      edges.set(key, [...(edges.get(key) ?? []), `${from} → ${to}`]);
    }
  }
  return { rooms, edges };
}

describe('rooms of src/', () => {
  const graph = readImportGraph(SRC);
  const { rooms, edges } = roomGraph(graph);

  it('reads the imports it checks (static, re-export and dynamic)', () => {
    expect(graph.size).toBeGreaterThan(50);
    expect(graph.get('index.ts')?.size).toBeGreaterThan(5);
    // cli/main.ts loads its lifecycle commands with a dynamic import().
    expect(graph.get('cli/main.ts')).toContain('cli/lifecycle.ts');
  });

  it('has no import cycle between modules', () => {
    expect(findCycles(graph)).toEqual([]);
  });

  it('has no cycle between rooms: data flows one way', () => {
    const cycles = findCycles(rooms).map((c) => ({
      rooms: c,
      edges: [...edges].filter(([k]) =>
        c.some((a) => k.startsWith(`${a} →`) && c.some((b) => k.endsWith(`→ ${b}`))),
      ),
    }));
    expect(cycles).toEqual([]);
  });

  it('has no import the room table forbids', () => {
    const bad = [...edges].filter(([key]) => {
      const [from, to] = key.split(' → ') as [string, string];
      return to !== 'util' && isForbidden(from, to);
    });
    expect(Object.fromEntries(bad)).toEqual({});
  });

  it('would notice a cycle and a forbidden edge', () => {
    const g: Graph = new Map([
      ['a/x.ts', new Set(['b/y.ts'])],
      ['b/y.ts', new Set(['a/x.ts'])],
      ['c/z.ts', new Set(['c/z.ts'])],
    ]);
    expect(findCycles(g)).toEqual([['a/x.ts', 'b/y.ts'], ['c/z.ts']]);
    expect(findCycles(roomGraph(g).rooms)).toEqual([['a', 'b']]);
    expect(isForbidden('buildpack', 'platform')).toBe(true);
    expect(isForbidden('archive', 'oci')).toBe(false);
    expect(isForbidden('archive', 'registry')).toBe(true);
    expect(isForbidden('platform', 'buildpack')).toBe(false);
  });
});
