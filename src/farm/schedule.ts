import {
  formatPlatform,
  normalizePlatform,
  type Platform,
  parsePlatform,
  platformCompatible,
  platformsEqual,
} from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';

/**
 * Placing targets on nodes: pure functions over what the nodes said in their hello, so every rule is
 * unit-tested without a network.
 *
 * Rules (spec/farm.md §3): platforms are normalized on both sides (arm64/v8 = arm64, aarch64 = arm64 …);
 * a node runs a target natively when its CPU runs it (compatible platforms included: amd64 runs 386), else
 * emulated when it has a binfmt entry for it; a node restricted with `--platforms` gets nothing else; a target
 * goes to a native node whenever one exists (it waits for one rather than taking an emulator), else to an
 * emulating node; among equals, the one with the most free job slots, then the first by name; a node never
 * runs more than its max jobs.
 */
export interface NodeCapacity {
  name: string;
  native: Platform[];
  emulated: Platform[];
  /** The node's `--platforms` restriction from the farm config; undefined: whatever it can run. */
  restrict?: Platform[];
  maxJobs: number;
}

/** A node that could not be reached, for error messages. */
export interface UnreachableNode {
  name: string;
  error: string;
}

export type RunMode = 'native' | 'emulated';

/** How `node` would run `target`, or undefined when it must not or cannot. */
export function runModeOn(node: NodeCapacity, target: Platform): RunMode | undefined {
  const t = normalizePlatform(target);
  if (node.restrict && !node.restrict.some((r) => platformsEqual(r, t))) return undefined;
  if (node.native.some((n) => platformCompatible(n, t))) return 'native';
  if (node.emulated.some((e) => platformsEqual(e, t))) return 'emulated';
  return undefined;
}

/** Nodes that may run `target` and how: native ones if there are any, else emulating ones. */
export function candidatesFor(
  target: Platform,
  nodes: readonly NodeCapacity[],
  exclude: ReadonlySet<string> = new Set(),
): { mode: RunMode; nodes: NodeCapacity[] } | undefined {
  const usable = nodes.filter((n) => !exclude.has(n.name));
  const native = usable.filter((n) => runModeOn(n, target) === 'native');
  if (native.length > 0) return { mode: 'native', nodes: native };
  const emulated = usable.filter((n) => runModeOn(n, target) === 'emulated');
  if (emulated.length > 0) return { mode: 'emulated', nodes: emulated };
  return undefined;
}

function describeNode(n: NodeCapacity): string {
  const list = (ps: Platform[]) => (ps.length > 0 ? ps.map(formatPlatform).join(', ') : 'none');
  return (
    `${n.name}: native ${list(n.native)}; emulated ${list(n.emulated)}` +
    (n.restrict ? `; restricted to ${list(n.restrict)}` : '')
  );
}

/**
 * Before anything runs: every target has at least one reachable node that may run it. The error lists every
 * node with its platforms (and every unreachable node with its error), so the user sees what is missing.
 */
export function checkPlacement(
  targets: readonly Platform[],
  nodes: readonly NodeCapacity[],
  unreachable: readonly UnreachableNode[] = [],
): void {
  const missing = targets.filter((t) => !candidatesFor(t, nodes));
  if (missing.length === 0) return;
  const lines = [
    ...nodes.map((n) => `  ${describeNode(n)}`),
    ...unreachable.map((u) => `  ${u.name}: unreachable (${u.error})`),
  ];
  throw new PackfarmError(
    'NO_NODE_FOR_PLATFORM',
    `no reachable node can build ${missing.map(formatPlatform).join(', ')}; the farm's nodes:\n${lines.join('\n') || '  (none)'}`,
    {
      hint: 'add a node that runs it (farm node add), register qemu-user-static binfmt handlers on a node to emulate it, or drop it from --platform',
    },
  );
}

export interface Assignment {
  target: string;
  node: string;
  mode: RunMode;
}

export interface PendingTarget {
  /** The target's key (its platform string). */
  target: string;
  platform: Platform;
  /** Nodes this target must not go to again (where it already failed). */
  exclude: ReadonlySet<string>;
}

/**
 * Assign as many pending targets as capacity allows right now. `running` counts jobs per node (this build's
 * and, from the hello, other builds'). Targets are taken in the order given (the caller sorts them), so the
 * same inputs always give the same placement, whatever order the nodes were listed in.
 * A target whose candidates are all busy stays pending (not in the result).
 */
export function assignTargets(
  pending: readonly PendingTarget[],
  nodes: readonly NodeCapacity[],
  running: ReadonlyMap<string, number>,
): Assignment[] {
  const load = new Map(running);
  const byName = [...nodes].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0));
  const out: Assignment[] = [];
  for (const p of pending) {
    const c = candidatesFor(p.platform, byName, p.exclude);
    if (!c) continue;
    let best: NodeCapacity | undefined;
    let bestFree = 0;
    for (const n of c.nodes) {
      const free = n.maxJobs - (load.get(n.name) ?? 0);
      if (free > bestFree) {
        best = n;
        bestFree = free;
      }
    }
    if (!best) continue;
    load.set(best.name, (load.get(best.name) ?? 0) + 1);
    out.push({ target: p.target, node: best.name, mode: c.mode });
  }
  return out;
}

/** Whether a pending target can still go anywhere (otherwise it has failed for good). */
export function hasCandidate(p: PendingTarget, nodes: readonly NodeCapacity[]): boolean {
  return candidatesFor(p.platform, nodes, p.exclude) !== undefined;
}

/** Parse and normalize a list of platform strings (a node's hello, a `--platforms` flag). */
export function parsePlatformList(items: readonly string[], source: string): Platform[] {
  return items.map((p) => parsePlatform(p, source));
}
