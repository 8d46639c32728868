import { describe, expect, it } from 'vitest';
import { schemeFromChallenges } from './auth.js';
import { parseWwwAuthenticate } from './challenge.js';
import { mergeScopes, scopesCover } from './scope.js';

describe('parseWwwAuthenticate', () => {
  it('reads a Bearer challenge with quoted values containing commas', () => {
    expect(
      parseWwwAuthenticate(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull,push"',
      ),
    ).toEqual([
      {
        scheme: 'bearer',
        params: {
          realm: 'https://auth.example/token',
          service: 'registry.example',
          scope: 'repository:a/b:pull,push',
        },
      },
    ]);
  });

  it('splits several challenges in one header and keeps their parameters apart', () => {
    const c = parseWwwAuthenticate(
      'Basic realm="simple, with comma", Bearer realm="https://t/x",error="insufficient_scope"',
    );
    expect(c.map((x) => x.scheme)).toEqual(['basic', 'bearer']);
    expect(c[0]!.params).toEqual({ realm: 'simple, with comma' });
    expect(c[1]!.params).toEqual({ realm: 'https://t/x', error: 'insufficient_scope' });
  });

  it('unescapes quoted-pairs and tolerates spaces around "="', () => {
    const [c] = parseWwwAuthenticate('Bearer realm = "a \\"quoted\\" \\\\ realm" , service=tok');
    expect(c!.params).toEqual({ realm: 'a "quoted" \\ realm', service: 'tok' });
  });

  it('is case-insensitive on scheme and parameter names', () => {
    const [c] = parseWwwAuthenticate('BEARER Realm="r",SERVICE="s"');
    expect(c).toEqual({ scheme: 'bearer', params: { realm: 'r', service: 's' } });
  });

  it('reads token68 credentials and parameter-less schemes', () => {
    expect(parseWwwAuthenticate('Negotiate abc123==, Basic')).toEqual([
      { scheme: 'negotiate', params: {}, token68: 'abc123==' },
      { scheme: 'basic', params: {} },
    ]);
  });

  it('accepts several headers and skips garbage without losing the usable challenge', () => {
    const c = parseWwwAuthenticate(['(((', 'Bearer realm="https://t",,  ,service="s"']);
    expect(c).toEqual([{ scheme: 'bearer', params: { realm: 'https://t', service: 's' } }]);
    expect(parseWwwAuthenticate(undefined)).toEqual([]);
    expect(parseWwwAuthenticate('')).toEqual([]);
  });

  it('keeps a quoted value running to the end when unterminated', () => {
    expect(parseWwwAuthenticate('Bearer realm="https://t, x')[0]!.params.realm).toBe('https://t, x');
  });

  it('prefers Bearer over Basic when both are offered', () => {
    expect(
      schemeFromChallenges(parseWwwAuthenticate('Basic realm="x", Bearer realm="https://t",service="s"')),
    ).toEqual({ kind: 'bearer', realm: 'https://t', service: 's' });
    expect(schemeFromChallenges(parseWwwAuthenticate('Basic realm="x"'))).toEqual({ kind: 'basic' });
    // A Bearer challenge without a realm cannot be used.
    expect(schemeFromChallenges(parseWwwAuthenticate('Bearer service="s"'))).toBeUndefined();
  });
});

describe('scopes', () => {
  it('merges actions per resource into a canonical list', () => {
    expect(
      mergeScopes([
        'repository:b:push',
        'repository:a:pull',
        'repository:b:pull',
        'repository:c:pull repository:c:delete',
      ]),
    ).toEqual(['repository:a:pull', 'repository:b:pull,push', 'repository:c:delete,pull']);
  });

  it('decides coverage', () => {
    expect(scopesCover(['repository:a:pull,push'], ['repository:a:pull'])).toBe(true);
    expect(scopesCover(['repository:a:pull'], ['repository:a:pull,push'])).toBe(false);
    expect(scopesCover(['repository:a:pull,push'], ['repository:a:pull', 'repository:b:pull'])).toBe(false);
    expect(scopesCover(['registry:catalog:*'], ['registry:catalog:read'])).toBe(true);
    expect(scopesCover([], [])).toBe(true);
  });
});
