import { describe, expect, it } from 'vitest';
import { type DetectPlan, type PlanCandidate, parseDetectPlan, resolveBuildPlan } from './plan.js';

type S = { provides?: string[]; requires?: (string | [string, Record<string, unknown>])[] };
const sections = (s: S) => ({
  provides: (s.provides ?? []).map((name) => ({ name })),
  requires: (s.requires ?? []).map((r) =>
    typeof r === 'string' ? { name: r } : { name: r[0], metadata: r[1] },
  ),
});
const plan = (main: S, ...or: S[]): DetectPlan => ({ main: sections(main), or: or.map(sections) });
const bp = (id: string, p: DetectPlan, optional = false): PlanCandidate<string> => ({
  member: id,
  id,
  version: '1',
  optional,
  plan: p,
});

describe('resolveBuildPlan', () => {
  it('pairs provides with later requires; one entry per name with every require', () => {
    const r = resolveBuildPlan([
      bp('node', plan({ provides: ['node'], requires: [['node', { version: '20' }]] })),
      bp('npm', plan({ provides: ['npm'], requires: [['node', { build: true }], 'npm'] })),
      bp('app', plan({ requires: ['node'] })),
    ]);
    expect(r?.members).toEqual(['node', 'npm', 'app']);
    expect(r?.entries).toEqual([
      {
        providers: [{ id: 'node', version: '1' }],
        requires: [
          { name: 'node', metadata: { version: '20' } },
          { name: 'node', metadata: { build: true } },
          { name: 'node' },
        ],
      },
      { providers: [{ id: 'npm', version: '1' }], requires: [{ name: 'npm' }] },
    ]);
  });

  it('lists every provider of a name that came before its first later require', () => {
    const r = resolveBuildPlan([
      bp('a', plan({ provides: ['x'] })),
      bp('b', plan({ provides: ['x'] })),
      bp('c', plan({ requires: ['x'] })),
    ]);
    expect(r?.entries[0]?.providers.map((p) => p.id)).toEqual(['a', 'b']);
  });

  it('fails when a required buildpack requires what nobody earlier provides, or provides what nobody later requires', () => {
    expect(
      resolveBuildPlan([bp('a', plan({ requires: ['x'] })), bp('b', plan({ provides: ['x'] }))]),
    ).toBeUndefined();
    expect(resolveBuildPlan([bp('a', plan({ provides: ['x'] }))])).toBeUndefined();
    // Its own provide counts: provides are registered before requires within one buildpack.
    expect(resolveBuildPlan([bp('a', plan({ provides: ['x'], requires: ['x'] }))])?.members).toEqual(['a']);
  });

  it('drops optional buildpacks that do not fit, with all their provides and requires', () => {
    const logs: string[] = [];
    const r = resolveBuildPlan(
      [
        bp('a', plan({ provides: ['x'], requires: ['x'] })),
        bp('unused', plan({ provides: ['y'] }), true),
        bp('needy', plan({ requires: ['z', 'x'] }), true),
      ],
      (m) => logs.push(m),
    );
    expect(r?.members).toEqual(['a']);
    expect(r?.entries).toEqual([{ providers: [{ id: 'a', version: '1' }], requires: [{ name: 'x' }] }]);
    expect(logs).toContain('skip: unused@1 provides unused y');
    expect(logs).toContain('skip: needy@1 requires z');
  });

  it('dropping an optional provider can fail a required buildpack that needed it', () => {
    expect(
      resolveBuildPlan([
        bp('opt', plan({ provides: ['x'], requires: ['nothing'] }), true),
        bp('b', plan({ requires: ['x'] })),
      ]),
    ).toBeUndefined();
  });

  it('tries [[or]] alternatives left to right, depth first, and takes the first trial that resolves', () => {
    const logs: string[] = [];
    const r = resolveBuildPlan(
      [
        bp('a', plan({ provides: ['x'] }, { provides: ['y'] })),
        bp('b', plan({ requires: ['y'] }, { requires: ['x'] })),
      ],
      (m) => logs.push(m),
    );
    // (a.main, b.main) fails; (a.main, b.or[0]) resolves before (a.or[0], b.main) is tried.
    expect(r?.entries).toEqual([{ providers: [{ id: 'a', version: '1' }], requires: [{ name: 'x' }] }]);
    expect(logs.filter((l) => l.startsWith('Resolving plan'))).toEqual([
      'Resolving plan... (try #1)',
      'Resolving plan... (try #2)',
    ]);
  });

  it('may drop an optional buildpack only in its last alternative', () => {
    // With a.main droppable the second trial would resolve to [b]; as it is not, a's [[or]] makes [a, b].
    const r = resolveBuildPlan([
      bp('a', plan({ provides: ['x'] }, { provides: ['y'] }), true),
      bp('b', plan({ requires: ['y'] }, {})),
    ]);
    expect(r?.members).toEqual(['a', 'b']);
    expect(r?.entries.map((e) => e.requires[0]?.name)).toEqual(['y']);
  });

  it('fails a trial that ends up with no buildpacks', () => {
    expect(resolveBuildPlan([bp('a', plan({ provides: ['x'] }), true)])).toBeUndefined();
  });
});

describe('parseDetectPlan', () => {
  it('reads provides, requires and [[or]] and ignores unknown keys', () => {
    const p = parseDetectPlan(
      '[[provides]]\nname = "a"\n[[requires]]\nname = "a"\nextra = 1\n[requires.metadata]\nversion = "1"\n[[or]]\n[[or.requires]]\nname = "b"\n',
      'buildpack x@1',
      '/plan.toml',
    );
    expect(p).toEqual({
      main: { provides: [{ name: 'a' }], requires: [{ name: 'a', metadata: { version: '1' } }] },
      or: [{ provides: [], requires: [{ name: 'b' }] }],
    });
    expect(parseDetectPlan('', 'bp', '/p')).toEqual({ main: { provides: [], requires: [] }, or: [] });
  });

  it('takes a deprecated top-level requires version as metadata.version, refusing only a conflict', () => {
    expect(
      parseDetectPlan('[[requires]]\nname = "ruby"\nversion = "3"\n', 'buildpack r@1', '/p.toml').main
        .requires,
    ).toEqual([{ name: 'ruby', metadata: { version: '3' } }]);
    expect(
      parseDetectPlan(
        '[[or]]\n[[or.requires]]\nname = "b"\nversion = "1"\n[or.requires.metadata]\nversion = "1"\n',
        'bp',
        '/p',
      ).or[0]?.requires,
    ).toEqual([{ name: 'b', metadata: { version: '1' } }]);
    expect(() =>
      parseDetectPlan(
        '[[requires]]\nname = "ruby"\nversion = "3"\n[requires.metadata]\nversion = "2"\n',
        'buildpack r@1',
        '/p.toml',
      ),
    ).toThrow(
      'buildpack r@1: build plan /p.toml: requires[0] (ruby) has "version" = "3" and "metadata.version" = "2", which disagree',
    );
    expect(() => parseDetectPlan('[[requires]]\nversion = "1"\n', 'bp', '/p')).toThrow(/requires\[0\]\.name/);
    expect(() => parseDetectPlan('[[requires]\n', 'bp', '/p')).toThrow(/bp: build plan \/p: not valid TOML/);
  });
});
