import { describe, expect, it } from 'vitest';
import { globToRegExp } from './export-slices.js';

describe('globToRegExp', () => {
  const m = (glob: string, path: string) => globToRegExp(glob).test(path);
  it('keeps * and ? within a segment', () => {
    expect(m('static/*', 'static/a.css')).toBe(true);
    expect(m('static/*', 'static/sub/a.css')).toBe(false);
    expect(m('*.js', 'a.js')).toBe(true);
    expect(m('?.js', 'ab.js')).toBe(false);
  });
  it('lets ** span segments and ignores ./ and leading /', () => {
    expect(m('src/**', 'src/a/b/c.ts')).toBe(true);
    expect(m('**/*.md', 'README.md')).toBe(true);
    expect(m('**/*.md', 'docs/x/y.md')).toBe(true);
    expect(m('./lib/*', 'lib/x')).toBe(true);
    expect(m('/lib/*', 'lib/x')).toBe(true);
  });
  it('treats other characters literally and supports classes', () => {
    expect(m('a.b', 'axb')).toBe(false);
    expect(m('[ab].txt', 'b.txt')).toBe(true);
    expect(m('[!ab].txt', 'a.txt')).toBe(false);
    expect(m('(x)+', '(x)+')).toBe(true);
  });
});
