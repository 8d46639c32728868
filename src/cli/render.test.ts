import { describe, expect, it } from 'vitest';
import type { BuildEvent } from '../api/events.js';
import { colorAllowed, createBuildRenderer } from './render.js';

const planned = (n: number): BuildEvent => ({
  type: 'planned',
  target: '',
  phase: 'plan',
  index: n > 1,
  targets: ['linux/amd64', 'linux/arm64']
    .slice(0, n)
    .map((name) => ({ name, runs: 'native', executor: 'oci' })),
});
const events: BuildEvent[] = [
  { type: 'phase-start', target: 'linux/arm64', phase: 'build' },
  { type: 'output', target: 'linux/arm64', phase: 'build', buildpack: 'a', stream: 'stdout', line: 'hi' },
  { type: 'warning', target: 'linux/arm64', phase: 'export', message: 'careful' },
  { type: 'debug', target: 'linux/arm64', phase: 'export', message: 'noise' },
];

function render(mode: 'lines' | 'json', first: BuildEvent, opts: { quiet?: boolean } = {}): string[] {
  const out: string[] = [];
  const r = createBuildRenderer({ mode, write: (l) => out.push(l), ...opts });
  for (const e of [first, ...events]) r.onEvent(e);
  r.close();
  return out;
}

describe('build renderer', () => {
  it('prefixes lines with the target when the plan has several', () => {
    expect(render('lines', planned(2))).toEqual([
      '[linux/arm64] ===> BUILD',
      '[linux/arm64] hi',
      '[linux/arm64] WARN: careful',
    ]);
  });
  it('leaves one-target lines as they were', () => {
    expect(render('lines', planned(1))).toEqual(['===> BUILD', 'hi', 'WARN: careful']);
    expect(render('lines', planned(1), { quiet: true })).toEqual(['WARN: careful']);
  });
  it('prints every event as a JSON line', () => {
    const lines = render('json', planned(2));
    expect(lines).toHaveLength(5);
    expect(JSON.parse(lines[1]!)).toEqual(events[0]);
  });
  it('colours only a terminal without NO_COLOR', () => {
    expect(colorAllowed(true, {})).toBe(true);
    expect(colorAllowed(true, { NO_COLOR: '1' })).toBe(false);
    expect(colorAllowed(false, {})).toBe(false);
  });
  it('on a terminal, keeps one status line per target under the scrolling lines', () => {
    let t = 0;
    const raw: string[] = [];
    const r = createBuildRenderer({
      mode: 'tty',
      write: () => {},
      writeRaw: (x) => raw.push(x),
      now: () => t,
    });
    r.onEvent(planned(2));
    r.onEvent({
      type: 'target-start',
      target: 'linux/amd64',
      phase: 'prepare',
      runs: 'native',
      executor: 'oci',
    });
    r.onEvent({
      type: 'target-start',
      target: 'linux/arm64',
      phase: 'prepare',
      runs: 'emulated',
      executor: 'oci',
    });
    t = 1500;
    r.onEvent({ type: 'phase-start', target: 'linux/arm64', phase: 'build' });
    r.onEvent({ type: 'upload', target: 'linux/arm64', phase: 'export', bytes: 2048 });
    r.close();
    const screen = raw.join('');
    // The status block is cleared (cursor up, erase) before each new line and drawn again after it.
    expect(screen).toContain('\u001b[2A\u001b[0J');
    expect(screen).toContain('[linux/arm64] ===> BUILD\n');
    const last = raw.at(-1)!;
    expect(last).toBe(
      '[linux/amd64] START  1.5s  (native)\n[linux/arm64] BUILD  1.5s  (emulated)  ↑ 2.0 KiB\n',
    );
  });
});
