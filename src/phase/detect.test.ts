import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type BuildpackStore, parseBuildpackDescriptor } from '../buildpack/descriptor.js';
import type { ExecSpec, Executor } from '../exec/executor.js';
import { detect } from './detect.js';

/** Buildpacks `p/<n>` that exist only in memory; their bin/detect is the fake executor below. */
const store: BuildpackStore = {
  buildpacksDir: '/bps',
  async lookup(id, version) {
    return parseBuildpackDescriptor(`api = "0.12"\n[buildpack]\nid = "${id}"\nversion = "${version}"\n`, {
      source: `/bps/${id}/buildpack.toml`,
      dir: `/bps/${id.replace('/', '_')}/${version}`,
    });
  },
};

/**
 * A fake bin/detect that counts concurrent runs. With `barrier`, the first `barrier` runs wait for each
 * other: a detector that ran them one at a time would never finish (and the test would time out).
 */
function countingExecutor(pass: (spec: ExecSpec) => boolean, barrier = 0) {
  let active = 0;
  let waiting: (() => void)[] = [];
  const state = { max: 0, runs: 0, planDirs: new Set<string>() };
  const executor: Executor = {
    kind: 'fake',
    async run(spec) {
      active++;
      state.runs++;
      state.max = Math.max(state.max, active);
      state.planDirs.add(dirname(spec.env.CNB_BUILD_PLAN_PATH!));
      if (state.runs <= barrier) {
        await new Promise<void>((r) => {
          waiting.push(r);
          if (waiting.length === barrier) {
            for (const w of waiting) w();
            waiting = [];
          }
        });
      }
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      active--;
      if (!pass(spec)) return { exitCode: 100 };
      await writeFile(spec.env.CNB_BUILD_PLAN_PATH!, '');
      return { exitCode: 0 };
    },
  };
  return { executor, state };
}

const group = (...ids: string[]) => ({ group: ids.map((id) => ({ id, version: '1', optional: false })) });

describe('detect orchestration', () => {
  it('bounds concurrent bin/detects and removes its scratch dir', async () => {
    const { executor, state } = countingExecutor(() => true, 2);
    const r = await detect({
      appDir: '/app',
      platformDir: '/nonexistent-platform',
      store,
      executor,
      concurrency: 2,
      order: [group('p/1', 'p/2', 'p/3', 'p/4', 'p/5')],
      target: { os: 'linux', arch: 'amd64' },
    });
    expect(r.group.map((g) => g.id)).toEqual(['p/1', 'p/2', 'p/3', 'p/4', 'p/5']);
    expect(state.max).toBe(2);
    expect(state.runs).toBe(5);
    expect([...state.planDirs].some((d) => existsSync(d))).toBe(false);
  });

  it('runs a group’s detects in parallel and reuses results across groups', async () => {
    const { executor, state } = countingExecutor((spec) => spec.env.CNB_BUILDPACK_DIR!.endsWith('p_ok/1'), 3);
    const r = await detect({
      appDir: '/app',
      platformDir: '/nonexistent-platform',
      store,
      executor,
      concurrency: 4,
      order: [group('p/a', 'p/b', 'p/c'), group('p/a', 'p/b'), group('p/b', 'p/ok')],
      target: { os: 'linux', arch: 'amd64' },
    }).catch((e) => e);
    expect(r.group?.map((g: { id: string }) => g.id)).toBeUndefined();
    expect(r.exitCode).toBe(20);
    expect(state.max).toBe(3);
    // p/a, p/b, p/c once each, then only p/ok is new.
    expect(state.runs).toBe(4);
  });
});
