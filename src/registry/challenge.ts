/**
 * WWW-Authenticate parsing (RFC 7235 section 4.1, auth-param grammar of section 2.1):
 *
 *   challenge  = auth-scheme [ 1*SP ( token68 / #auth-param ) ]
 *   auth-param = token BWS "=" BWS ( token / quoted-string )
 *
 * One header may hold several comma-separated challenges and a response may carry several headers. A
 * token followed by `=` continues the current challenge as a parameter; any other token starts a new
 * challenge. Quoted values may contain commas, spaces and backslash escapes. Scheme and parameter names are
 * case-insensitive and stored lower-case. Malformed pieces are skipped rather than fatal: a registry's odd
 * header should not hide a usable challenge next to it.
 */
export interface AuthChallenge {
  /** Lower-case scheme: `bearer`, `basic`, … */
  scheme: string;
  params: Record<string, string>;
  token68?: string;
}

const TCHAR = /[!#$%&'*+\-.^_`|~0-9A-Za-z]/;
const TOKEN68 = /^[A-Za-z0-9\-._~+/]+=*/;

export function parseWwwAuthenticate(header: string | readonly string[] | undefined): AuthChallenge[] {
  if (header === undefined) return [];
  if (typeof header !== 'string') return header.flatMap((h) => parseWwwAuthenticate(h));
  const s = header;
  const n = s.length;
  const out: AuthChallenge[] = [];
  let i = 0;
  let current: AuthChallenge | undefined;

  const isWs = (c: string | undefined) => c === ' ' || c === '\t';
  const skipWs = () => {
    while (i < n && isWs(s[i])) i++;
  };
  const readToken = (): string => {
    const start = i;
    while (i < n && TCHAR.test(s[i]!)) i++;
    return s.slice(start, i);
  };
  const readQuoted = (): string => {
    i++; // opening quote
    let value = '';
    while (i < n && s[i] !== '"') {
      if (s[i] === '\\' && i + 1 < n) i++;
      value += s[i];
      i++;
    }
    if (i < n) i++; // closing quote; an unterminated string runs to the end
    return value;
  };
  const skipToComma = () => {
    while (i < n && s[i] !== ',') {
      if (s[i] === '"') readQuoted();
      else i++;
    }
  };

  while (i < n) {
    skipWs();
    if (s[i] === ',') {
      i++;
      continue;
    }
    if (i >= n) break;
    const word = readToken();
    if (word === '') {
      // Not a token where one must be: drop this element.
      skipToComma();
      continue;
    }
    skipWs();
    if (current && s[i] === '=') {
      i++;
      skipWs();
      const value = s[i] === '"' ? readQuoted() : readToken();
      current.params[word.toLowerCase()] = value;
      skipWs();
      if (i < n && s[i] !== ',') skipToComma();
      continue;
    }
    current = { scheme: word.toLowerCase(), params: {} };
    out.push(current);
    // A token68 sits alone after the scheme: followed only by optional spaces and then a comma or the end.
    const m = TOKEN68.exec(s.slice(i));
    if (m) {
      let j = i + m[0].length;
      while (j < n && isWs(s[j])) j++;
      if (j >= n || s[j] === ',') {
        current.token68 = m[0];
        i = j;
      }
    }
  }
  return out;
}

/** The first challenge of the given scheme. */
export function findChallenge(
  challenges: readonly AuthChallenge[],
  scheme: string,
): AuthChallenge | undefined {
  const want = scheme.toLowerCase();
  return challenges.find((c) => c.scheme === want);
}
