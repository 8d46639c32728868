/**
 * Tests that need root (chown, setuid bits) fail when not run as root, saying how to run them: a skipped test
 * would pass CI without checking anything (the design's rule: fail, never silently skip).
 */
export function requireRoot(what: string): void {
  if (process.getuid?.() !== 0)
    throw new Error(
      `${what} needs root (uid 0); this process runs as uid ${process.getuid?.()}: run the tests as root, e.g. \`sudo npm test\` or in a root container`,
    );
}
