import { describe, expect, it } from 'vitest';
import type { ProcessDef } from '../buildpack/launch.js';
import type { PlanFile } from '../platform/files.js';
import { mergeProcesses, planFor, withoutMet } from './build.js';

const proc = (type: string, extra: Partial<ProcessDef> = {}): ProcessDef => ({
  type,
  command: [`/bin/${type}`],
  args: [],
  direct: true,
  default: false,
  workingDir: undefined,
  execEnv: undefined,
  ...extra,
});

describe('mergeProcesses', () => {
  it('later buildpacks replace a type; output is sorted by type', () => {
    const m = mergeProcesses([
      { buildpackId: 'a', processes: [proc('web'), proc('worker')] },
      { buildpackId: 'b', processes: [proc('web', { command: ['/b/web'] })] },
    ]);
    expect(m.processes.map((p) => [p.type, p.buildpackId, p.command[0]])).toEqual([
      ['web', 'b', '/b/web'],
      ['worker', 'a', '/bin/worker'],
    ]);
    expect(m.defaultType).toBeUndefined();
  });

  it('the last default wins', () => {
    const m = mergeProcesses([
      { buildpackId: 'a', processes: [proc('web', { default: true })] },
      { buildpackId: 'b', processes: [proc('task', { default: true })] },
    ]);
    expect(m.defaultType).toBe('task');
    expect(m.warnings).toEqual([]);
  });

  it('a later non-default redefinition of the default type clears the default, with a warning', () => {
    const m = mergeProcesses([
      { buildpackId: 'a', processes: [proc('web', { default: true })] },
      { buildpackId: 'b', processes: [proc('web')] },
    ]);
    expect(m.defaultType).toBeUndefined();
    expect(m.warnings).toHaveLength(1);
    expect(m.warnings[0]).toContain('"web"');
  });

  it('redefining another type keeps the default', () => {
    const m = mergeProcesses([
      { buildpackId: 'a', processes: [proc('web', { default: true }), proc('worker')] },
      { buildpackId: 'b', processes: [proc('worker')] },
    ]);
    expect(m.defaultType).toBe('web');
  });
});

describe('planFor / withoutMet', () => {
  const plan: PlanFile['entries'] = [
    {
      providers: [
        { id: 'p', version: '1' },
        { id: 't', version: '1' },
      ],
      requires: [
        { name: 'dep', metadata: { version: '1' } },
        { name: 'dep', metadata: { version: '2' } },
      ],
    },
    { providers: [{ id: 'p', version: '1' }], requires: [{ name: 'other' }] },
    { providers: [{ id: 'x', version: '1', extension: true }], requires: [{ name: 'ext' }] },
  ];

  it('gives a buildpack one entry per require of each entry it provides', () => {
    expect(planFor(plan, 'p')).toEqual([
      { name: 'dep', metadata: { version: '1' } },
      { name: 'dep', metadata: { version: '2' } },
      { name: 'other', metadata: undefined },
    ]);
    expect(planFor(plan, 't').map((e) => e.name)).toEqual(['dep', 'dep']);
    expect(planFor(plan, 'x')).toEqual([]);
  });

  it('met entries disappear for later buildpacks; unmet ones stay', () => {
    const afterP = withoutMet(plan, ['other']);
    expect(planFor(afterP, 't').map((e) => e.name)).toEqual(['dep', 'dep']);
    expect(planFor(withoutMet(plan, ['dep', 'other']), 't')).toEqual([]);
  });
});
