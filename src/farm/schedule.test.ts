import { describe, expect, it } from 'vitest';
import { parsePlatform } from '../oci/platform.js';
import {
  type NodeCapacity,
  type PendingTarget,
  assignTargets,
  checkPlacement,
  hasCandidate,
  runModeOn,
} from './schedule.js';

const p = (s: string) => parsePlatform(s);
const node = (
  name: string,
  native: string[],
  emulated: string[] = [],
  extra: Partial<NodeCapacity> = {},
) => ({
  name,
  native: native.map(p),
  emulated: emulated.map(p),
  maxJobs: 1,
  ...extra,
});
const pending = (t: string, exclude: string[] = []): PendingTarget => ({
  target: t,
  platform: p(t),
  exclude: new Set(exclude),
});

describe('runModeOn', () => {
  it('normalizes both sides: arm64/v8, aarch64 and arm64 are one platform', () => {
    const n = node('pi', ['linux/arm64/v8']);
    expect(runModeOn(n, p('linux/arm64'))).toBe('native');
    expect(runModeOn(node('x', ['linux/aarch64']), p('linux/arm64/v8'))).toBe('native');
    expect(runModeOn(node('x', ['linux/x86_64']), p('linux/amd64'))).toBe('native');
  });

  it('counts compatible platforms as native (amd64 runs 386, arm64 runs arm/v7)', () => {
    expect(runModeOn(node('x', ['linux/amd64']), p('linux/386'))).toBe('native');
    expect(runModeOn(node('x', ['linux/arm64']), p('linux/arm/v7'))).toBe('native');
  });

  it('emulates what binfmt lists, and honours a --platforms restriction', () => {
    const n = node('x', ['linux/amd64'], ['linux/arm64', 'linux/arm/v7']);
    expect(runModeOn(n, p('linux/arm64'))).toBe('emulated');
    expect(runModeOn(n, p('linux/s390x'))).toBeUndefined();
    const r = { ...n, restrict: [p('linux/arm64/v8')] };
    expect(runModeOn(r, p('linux/arm64'))).toBe('emulated');
    expect(runModeOn(r, p('linux/amd64'))).toBeUndefined();
  });
});

describe('assignTargets', () => {
  const farm = [
    node('b-emu', ['linux/amd64'], ['linux/arm64'], { maxJobs: 4 }),
    node('a-arm', ['linux/arm64/v8'], [], { maxJobs: 1 }),
    node('c-amd', ['linux/amd64'], [], { maxJobs: 2 }),
  ];

  it('prefers a native node, even a busy one, over an emulating one', () => {
    expect(assignTargets([pending('linux/arm64')], farm, new Map())).toEqual([
      { target: 'linux/arm64', node: 'a-arm', mode: 'native' },
    ]);
    // a-arm is full: the target waits rather than go to the emulator.
    expect(assignTargets([pending('linux/arm64')], farm, new Map([['a-arm', 1]]))).toEqual([]);
  });

  it('emulates when no node runs the target natively', () => {
    const onlyEmu = farm.filter((n) => n.name !== 'a-arm');
    expect(assignTargets([pending('linux/arm64')], onlyEmu, new Map())).toEqual([
      { target: 'linux/arm64', node: 'b-emu', mode: 'emulated' },
    ]);
  });

  it('spreads by free capacity and never exceeds max jobs', () => {
    const targets = ['linux/amd64', 'linux/386', 'linux/amd64/v2', 'linux/amd64/v3', 'linux/386'].map((t) =>
      pending(t),
    );
    const small = [
      node('x', ['linux/amd64'], [], { maxJobs: 2 }),
      node('y', ['linux/amd64'], [], { maxJobs: 1 }),
    ];
    const got = assignTargets(targets, small, new Map());
    // x has two free slots, y one: x, then the tie goes to x by name, then y; two targets wait.
    expect(got.map((a) => a.node)).toEqual(['x', 'x', 'y']);
  });

  it('gives the same placement whatever order the nodes are listed in', () => {
    const targets = [pending('linux/amd64'), pending('linux/arm64')];
    const a = assignTargets(targets, farm, new Map());
    const b = assignTargets(targets, [...farm].reverse(), new Map());
    expect(b).toEqual(a);
  });

  it('skips excluded nodes (a retry goes elsewhere) and knows when none is left', () => {
    const twoAmd = [node('x', ['linux/amd64']), node('y', ['linux/amd64'])];
    expect(assignTargets([pending('linux/amd64', ['x'])], twoAmd, new Map())).toEqual([
      { target: 'linux/amd64', node: 'y', mode: 'native' },
    ]);
    expect(hasCandidate(pending('linux/amd64', ['x', 'y']), twoAmd)).toBe(false);
  });
});

describe('checkPlacement', () => {
  it('passes when every target has a node', () => {
    expect(() =>
      checkPlacement([p('linux/amd64'), p('linux/arm64')], [node('x', ['linux/amd64'], ['linux/arm64'])]),
    ).not.toThrow();
  });

  it('lists every node, its platforms and the unreachable ones when a target has no node', () => {
    let err: Error | undefined;
    try {
      checkPlacement(
        [p('linux/riscv64'), p('linux/amd64')],
        [node('x', ['linux/amd64'], ['linux/arm64'], { restrict: [p('linux/amd64')] })],
        [{ name: 'far', error: 'Host key verification failed.' }],
      );
    } catch (e) {
      err = e as Error;
    }
    expect(err?.message).toContain('no reachable node can build linux/riscv64;');
    expect(err?.message).toContain('x: native linux/amd64; emulated linux/arm64; restricted to linux/amd64');
    expect(err?.message).toContain('far: unreachable (Host key verification failed.)');
    expect((err as { code?: string }).code).toBe('NO_NODE_FOR_PLATFORM');
  });
});
