/**
 * Which registries may be reached without verified TLS.
 *
 * An entry is `HOST[:PORT]` (a scheme or trailing path, if someone writes one, is ignored). Matching, after
 * lower-casing the host and removing IPv6 brackets:
 *   - an entry with a port matches only that host on that port (`127.0.0.1:5000` ≠ `127.0.0.1:5001`);
 *   - an entry without a port matches that host on any port (`localhost` matches `localhost:5000`).
 * There are no wildcards or CIDR ranges: a listed name is an explicit decision by the user.
 *
 * For a matching registry the client tries HTTPS without certificate verification first and falls back to
 * plain HTTP (what docker and podman do); every other registry is HTTPS with verified certificates only.
 */

export interface HostPort {
  /** Lower-case host name or IP address, IPv6 without brackets. */
  host: string;
  port?: string;
}

/** Split `host[:port]` (also `[v6]:port`, a bare IPv6 address, or a URL-ish `scheme://host:port/path`). */
export function splitHostPort(text: string): HostPort {
  let s = text.trim();
  const scheme = s.indexOf('://');
  if (scheme >= 0) s = s.slice(scheme + 3);
  const slash = s.indexOf('/');
  if (slash >= 0) s = s.slice(0, slash);
  if (s.startsWith('[')) {
    const close = s.indexOf(']');
    if (close > 0) {
      const host = s.slice(1, close).toLowerCase();
      const rest = s.slice(close + 1);
      return rest.startsWith(':') && rest.length > 1 ? { host, port: rest.slice(1) } : { host };
    }
  }
  const first = s.indexOf(':');
  // More than one ':' without brackets is a bare IPv6 address, which has no port.
  if (first >= 0 && first === s.lastIndexOf(':')) {
    const port = s.slice(first + 1);
    const host = s.slice(0, first).toLowerCase();
    return port === '' ? { host } : { host, port };
  }
  return { host: s.toLowerCase() };
}

/** Whether `registry` (host[:port] as in an image reference) is listed in `insecure`. */
export function isInsecureRegistry(registry: string, insecure: readonly string[] | undefined): boolean {
  if (!insecure || insecure.length === 0) return false;
  const r = splitHostPort(registry);
  return insecure.some((entry) => {
    if (entry.trim() === '') return false;
    const e = splitHostPort(entry);
    if (e.host !== r.host) return false;
    return e.port === undefined || e.port === r.port;
  });
}

/**
 * Registries listed in CNB_INSECURE_REGISTRIES (comma separated; whitespace around entries, and between
 * entries, is tolerated), without duplicates, in order.
 */
export function insecureRegistriesFromEnv(env: NodeJS.ProcessEnv = process.env): string[] {
  const raw = env.CNB_INSECURE_REGISTRIES ?? '';
  const out: string[] = [];
  for (const part of raw.split(/[\s,]+/)) {
    if (part !== '' && !out.includes(part)) out.push(part);
  }
  return out;
}
