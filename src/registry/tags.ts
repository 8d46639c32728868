import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import { parseWith } from '../util/validate.js';
import { type RegistryClient, readCapped } from './client.js';
import { displayUrl } from './errors.js';
import { repositoryScope } from './scope.js';

const TagListSchema = z.looseObject({
  name: z.string().optional(),
  tags: z.array(z.string()).nullish(),
});

/** Upper bound on pages followed, so a registry with a looping Link header cannot keep us forever. */
const MAX_PAGES = 10_000;

/**
 * The target of a `Link: <url>; rel="next"` header (RFC 8288), resolved against the request URL; undefined
 * when there is none.
 */
export function nextLink(header: string | string[] | undefined, base: URL): URL | undefined {
  if (!header) return undefined;
  for (const h of Array.isArray(header) ? header : [header]) {
    const re = /<([^>]*)>((?:\s*;\s*[^;,]+(?:=(?:"[^"]*"|[^;,]*))?)*)/g;
    for (let m = re.exec(h); m; m = re.exec(h)) {
      const params = m[2] ?? '';
      const rel = /;\s*rel\s*=\s*(?:"([^"]*)"|([^;,\s]+))/i.exec(params);
      const rels = (rel?.[1] ?? rel?.[2] ?? '').toLowerCase().split(/\s+/);
      if (rels.includes('next')) return new URL(m[1]!, base);
    }
  }
  return undefined;
}

/**
 * Every tag of a repository, following `Link` pagination. A repository the registry does not know has no
 * tags (empty list), which is what a caller checking "does this tag exist" needs.
 */
export async function listTags(
  client: RegistryClient,
  repository: string,
  opts: { pageSize?: number } = {},
): Promise<string[]> {
  const base = await client.baseUrl();
  let url: URL | undefined = new URL(`/v2/${repository}/tags/list`, base);
  if (opts.pageSize !== undefined) url.searchParams.set('n', String(opts.pageSize));
  const out: string[] = [];
  const seen = new Set<string>();
  for (let page = 0; url; page++) {
    if (page >= MAX_PAGES) {
      throw new PackfarmError(
        'REGISTRY_ERROR',
        `${displayUrl(url)}: more than ${MAX_PAGES} pages of tags; the registry's pagination seems to loop`,
      );
    }
    const res = await client.request({
      method: 'GET',
      url,
      scopes: [repositoryScope(repository, ['pull'])],
      what: 'tags',
      repository,
      accept: page === 0 ? [200, 404] : [200],
    });
    if (res.status === 404) {
      await res.body.dump().catch(() => {});
      return [];
    }
    const bytes = await readCapped(res, 32 * 1024 * 1024, 'tag list');
    let json: unknown;
    try {
      json = JSON.parse(bytes.toString('utf8'));
    } catch (err) {
      throw new PackfarmError('REGISTRY_ERROR', `${displayUrl(res.url)}: the tag list is not JSON`, {
        cause: err,
      });
    }
    const doc = parseWith(TagListSchema, json, displayUrl(res.url), 'REGISTRY_ERROR');
    for (const t of doc.tags ?? []) {
      if (!seen.has(t)) {
        seen.add(t);
        out.push(t);
      }
    }
    url = nextLink(res.headers.link, res.url);
  }
  return out;
}
