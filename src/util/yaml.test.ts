import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { toYaml } from './yaml.js';

describe('toYaml', () => {
  it('writes block YAML that keeps every type', () => {
    const doc = {
      image: 'reg/app:1',
      count: 3,
      ok: true,
      none: null,
      empty: [],
      obj: {},
      'odd key': 'yes',
      list: ['a', { type: 'web', args: ['x', 'y'], nested: { deep: 'null' } }, ['inner']],
    };
    expect(toYaml(doc)).toBe(
      [
        'image: "reg/app:1"',
        'count: 3',
        'ok: true',
        'none: null',
        'empty: []',
        'obj: {}',
        '"odd key": "yes"',
        'list:',
        '  - "a"',
        '  - type: "web"',
        '    args:',
        '      - "x"',
        '      - "y"',
        '    nested:',
        '      deep: "null"',
        '  - - "inner"',
        '',
      ].join('\n'),
    );
  });

  it('is read back as the same data by a YAML parser (python3 yaml, when installed)', async () => {
    const doc = { a: [{ b: [1, 'two', null], c: { d: 'e: f', g: [] } }], h: '#not a comment', i: '' };
    const r = await execa(
      'python3',
      ['-c', 'import sys,json,yaml; print(json.dumps(yaml.safe_load(sys.stdin)))'],
      {
        input: toYaml(doc),
        reject: false,
      },
    );
    if (r.exitCode !== 0)
      throw new Error(
        `python3 with PyYAML is needed for this check: apt-get install python3-yaml\n${r.stderr}`,
      );
    expect(JSON.parse(r.stdout)).toEqual(doc);
  });
});
