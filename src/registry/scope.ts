/**
 * Token scopes (`repository:team/app:pull,push`, `registry:catalog:*`): parsing, merging into one canonical
 * set per token request, and deciding whether a token granted for one set serves another.
 */

export type Action = 'pull' | 'push' | 'delete' | '*' | (string & {});

export function repositoryScope(repository: string, actions: readonly Action[]): string {
  return `repository:${repository}:${actions.join(',')}`;
}

interface ParsedScope {
  resource: string; // `type:name`
  actions: Set<string>;
}

// type is before the first ':', actions after the last one; the name in between may itself hold ':'
// (distribution allows `repository(plugin):name`-style types and hosts with ports in some names).
function parseScope(scope: string): ParsedScope | undefined {
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first <= 0 || last === first) return undefined;
  return {
    resource: scope.slice(0, last),
    actions: new Set(
      scope
        .slice(last + 1)
        .split(',')
        .filter((a) => a !== ''),
    ),
  };
}

/** One scope per resource with the union of its actions; sorted, so equal sets compare equal as strings. */
export function mergeScopes(scopes: Iterable<string>): string[] {
  const byResource = new Map<string, Set<string>>();
  for (const s of scopes) {
    for (const one of s.split(' ')) {
      if (one === '') continue;
      const p = parseScope(one);
      if (!p) continue;
      const set = byResource.get(p.resource) ?? new Set<string>();
      for (const a of p.actions) set.add(a);
      byResource.set(p.resource, set);
    }
  }
  return [...byResource.entries()]
    .map(([resource, actions]) => `${resource}:${[...actions].sort().join(',')}`)
    .sort();
}

/** Whether a token asked for `have` also asked for everything in `want` (`*` covers every action). */
export function scopesCover(have: readonly string[], want: readonly string[]): boolean {
  const granted = new Map<string, Set<string>>();
  for (const s of mergeScopes(have)) {
    const p = parseScope(s);
    if (p) granted.set(p.resource, p.actions);
  }
  for (const s of mergeScopes(want)) {
    const p = parseScope(s);
    if (!p) continue;
    const g = granted.get(p.resource);
    if (!g) return false;
    if (g.has('*')) continue;
    for (const a of p.actions) if (!g.has(a)) return false;
  }
  return true;
}
