/**
 * Which registries may be reached without verified TLS.
 *
 * An entry is `HOST[:PORT]` (a scheme or trailing path, if someone writes one, is ignored). Matching, after
 * lower-casing the host and removing IPv6 brackets:
 *   - an entry with a port matches only that host on that port (`127.0.0.1:5000` ≠ `127.0.0.1:5001`);
 *   - an entry without a port matches that host on any port (`localhost` matches `localhost:5000`).
 * There are no wildcards or CIDR ranges: a listed name is an explicit decision by the user.
 *
 * Loopback registries (`localhost`, `127.0.0.0/8`, `::1`, any port) are treated as listed without a flag, as
 * docker and go-containerregistry (so pack and the reference lifecycle) do: traffic that never leaves the
 * machine gains nothing from TLS, and a local test registry is plain HTTP almost always.
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

/** Whether `registry`'s host is a loopback name or address: `localhost`, 127.0.0.0/8 or ::1. */
export function isLoopbackRegistry(registry: string): boolean {
  const { host } = splitHostPort(registry);
  if (host === 'localhost' || host === '::1' || host === '0:0:0:0:0:0:0:1') return true;
  const m = /^127\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/.exec(host);
  return m?.slice(1).every((o) => Number(o) <= 255) ?? false;
}

/**
 * Whether `registry` (host[:port] as in an image reference) may be reached without verified TLS: listed in
 * `insecure`, or a loopback registry.
 */
export function isInsecureRegistry(registry: string, insecure: readonly string[] | undefined): boolean {
  if (isLoopbackRegistry(registry)) return true;
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
