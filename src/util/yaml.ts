/**
 * YAML for JSON-shaped data (objects, arrays, strings, numbers, booleans, null): block style, two-space indent.
 * Strings are written double-quoted with JSON escapes, which YAML reads the same way, so no value can be
 * mistaken for another type (`"yes"`, `"1.0"`, `"null"` stay strings). Only what `inspect -o yaml` and
 * similar reports need: no anchors, no multi-document streams.
 */
export function toYaml(value: unknown): string {
  return `${render(value, 0).join('\n')}\n`;
}

function scalar(v: unknown): string {
  if (v === null || v === undefined) return 'null';
  if (typeof v === 'string') return JSON.stringify(v);
  if (typeof v === 'number') return Number.isFinite(v) ? String(v) : JSON.stringify(String(v));
  if (typeof v === 'boolean') return v ? 'true' : 'false';
  return JSON.stringify(String(v));
}

function isContainer(v: unknown): v is Record<string, unknown> | unknown[] {
  return v !== null && typeof v === 'object';
}

function isEmpty(v: Record<string, unknown> | unknown[]): boolean {
  return Array.isArray(v) ? v.length === 0 : Object.keys(v).length === 0;
}

function key(k: string): string {
  return /^[A-Za-z_][A-Za-z0-9_.-]*$/.test(k) && !/^(true|false|null|yes|no|on|off|y|n|~)$/i.test(k)
    ? k
    : JSON.stringify(k);
}

function render(v: unknown, indent: number): string[] {
  const pad = ' '.repeat(indent);
  if (!isContainer(v)) return [`${pad}${scalar(v)}`];
  if (isEmpty(v)) return [`${pad}${Array.isArray(v) ? '[]' : '{}'}`];
  const lines: string[] = [];
  if (Array.isArray(v)) {
    for (const item of v) {
      if (isContainer(item) && !isEmpty(item)) {
        const inner = render(item, indent + 2);
        // The first line of the item goes after the dash.
        lines.push(`${pad}- ${(inner[0] ?? '').trimStart()}`, ...inner.slice(1));
      } else {
        lines.push(`${pad}- ${isContainer(item) ? (Array.isArray(item) ? '[]' : '{}') : scalar(item)}`);
      }
    }
    return lines;
  }
  for (const [k, item] of Object.entries(v)) {
    if (item === undefined) continue;
    if (isContainer(item) && !isEmpty(item)) lines.push(`${pad}${key(k)}:`, ...render(item, indent + 2));
    else
      lines.push(
        `${pad}${key(k)}: ${isContainer(item) ? (Array.isArray(item) ? '[]' : '{}') : scalar(item)}`,
      );
  }
  return lines;
}
