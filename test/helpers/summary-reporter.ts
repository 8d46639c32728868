import type { Reporter, TestModule } from 'vitest/node';

/**
 * Prints why tests were skipped (each distinct `ctx.skip(note)` note with its count, e.g. the OCI schema
 * tests without OCI_SCHEMA_DIR), then one plain closing line, `tests: N passed, N failed, N skipped`, after
 * vitest's own summary, so any CI that reads a test run's last line can count the result without knowing
 * vitest's format.
 */
export default class SummaryReporter implements Reporter {
  onTestRunEnd(testModules: ReadonlyArray<TestModule>): void {
    let passed = 0;
    let failed = 0;
    let skipped = 0;
    const reasons = new Map<string, number>();
    for (const mod of testModules) {
      for (const test of mod.children.allTests()) {
        const result = test.result();
        const state = result.state;
        if (state === 'passed') passed++;
        else if (state === 'failed') failed++;
        else {
          skipped++;
          const note = 'note' in result && typeof result.note === 'string' ? result.note : undefined;
          if (note) reasons.set(note, (reasons.get(note) ?? 0) + 1);
        }
      }
      // A module that failed to load has no tests but must still count as a failure.
      if (mod.state() === 'failed' && [...mod.children.allTests()].length === 0) failed++;
    }
    for (const [note, n] of reasons) process.stdout.write(`\nskipped ${n} test(s): ${note}`);
    process.stdout.write(`\ntests: ${passed} passed, ${failed} failed, ${skipped} skipped\n`);
  }
}
