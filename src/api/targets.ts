import {
  compatiblePlatforms,
  formatPlatform,
  hostPlatform,
  type Platform,
  parsePlatform,
  platformsEqual,
} from '../oci/platform.js';
import { PackfarmError } from '../util/errors.js';

/**
 * Build targets: which platforms a build is for, and how this machine runs each one.
 *
 * `--platform` takes comma-separated lists and may be repeated; the result is normalized and deduplicated in
 * the order given (the index sorts its children itself). Without it, the defaults come from the builder (its
 * `[[targets]]`, or the platforms of a builder index) narrowed to what this machine can run, and the ones
 * left out are reported with the reason.
 */
export interface MachinePlatforms {
  /** What the CPU executes directly (the host platform and its compatibility modes, e.g. amd64 → 386). */
  native: Platform[];
  /** What the kernel runs through a binfmt_misc handler (qemu-user). */
  emulated: Platform[];
}

export type Runs = 'native' | 'emulated';

/** A machine with only its native platforms (tests; the real one adds binfmt_misc's, see plan.ts). */
export function nativeMachine(host: Platform = hostPlatform()): MachinePlatforms {
  return { native: compatiblePlatforms(host), emulated: [] };
}

export function howRunnable(machine: MachinePlatforms, p: Platform): Runs | undefined {
  if (machine.native.some((n) => platformsEqual(n, p))) return 'native';
  // An emulator for arm/v7 also runs v6 and v5 code: what a machine of that platform runs natively.
  const viaEmulator = machine.emulated.some((e) =>
    compatiblePlatforms(e)
      .filter((c) => c.architecture === e.architecture)
      .some((c) => platformsEqual(c, p)),
  );
  if (viaEmulator) return 'emulated';
  return undefined;
}

export function describeMachine(machine: MachinePlatforms): string {
  const native = machine.native.map(formatPlatform).join(', ');
  const emulated = machine.emulated.map(formatPlatform).join(', ');
  return `native ${native}${emulated ? `; emulated ${emulated}` : '; nothing emulated'}`;
}

/** Every `--platform` value split on commas, parsed, normalized, duplicates dropped (first one kept). */
export function parsePlatformList(values: readonly string[], source = '--platform'): Platform[] {
  const out: Platform[] = [];
  for (const value of values) {
    const parts = value.split(',').map((p) => p.trim());
    if (parts.some((p) => p === ''))
      throw new PackfarmError(
        'INVALID_PLATFORM',
        `${source}: "${value}" has an empty entry (expected os/arch[/variant] separated by commas)`,
        { hint: 'e.g. --platform linux/amd64,linux/arm64' },
      );
    for (const part of parts) {
      const p = parsePlatform(part, source);
      if (!out.some((o) => platformsEqual(o, p) && (o.osVersion ?? '') === (p.osVersion ?? ''))) out.push(p);
    }
  }
  return out;
}

export interface DefaultTargets {
  targets: Platform[];
  /** Platforms the builder offers that are not built, each with the reason. */
  leftOut: Array<{ platform: Platform; reason: string }>;
}

/**
 * The targets of a build without `--platform`: the builder's platforms this machine can run (natively, or
 * emulated when the target can run in a build image), else this machine's own platform.
 */
export function defaultTargets(input: {
  offered: readonly Platform[];
  machine: MachinePlatforms;
  /** Whether emulated targets can be built (they need the oci executor and a build image). */
  canEmulate: boolean;
  host?: Platform;
}): DefaultTargets {
  const host = input.host ?? hostPlatform();
  if (input.offered.length === 0) return { targets: [host], leftOut: [] };
  const targets: Platform[] = [];
  const leftOut: DefaultTargets['leftOut'] = [];
  for (const p of input.offered) {
    const runs = howRunnable(input.machine, p);
    if (runs === 'native' || (runs === 'emulated' && input.canEmulate)) {
      if (!targets.some((t) => platformsEqual(t, p))) targets.push(p);
    } else if (runs === 'emulated')
      leftOut.push({ platform: p, reason: 'emulated targets need a build image and the oci executor' });
    else
      leftOut.push({
        platform: p,
        reason: `this machine cannot run it (${describeMachine(input.machine)}); see packfarm node setup-emulation`,
      });
  }
  return { targets, leftOut };
}

/**
 * The targets of a build with packfarm's default builder and no `--platform`: its platforms this machine runs
 * natively. Emulated ones are built only when asked for: each costs a first-use build of its part of the
 * default builder (spec/buildpacks.md), and every build under qemu is slow. The note names the others.
 */
export function defaultBuilderTargets(
  offered: readonly Platform[],
  machine: MachinePlatforms,
): { targets: Platform[]; note: string | undefined } {
  const targets = offered.filter((t) => howRunnable(machine, t) === 'native');
  if (targets.length === 0)
    throw new PackfarmError(
      'NO_TARGETS',
      `this machine (${describeMachine(machine)}) runs none of the default builder's platforms (${offered.map(formatPlatform).join(', ')}) natively`,
      {
        hint: 'name the platforms to build with --platform (emulated ones need qemu: packfarm node setup-emulation)',
      },
    );
  const others = offered.filter((t) => !targets.includes(t));
  return {
    targets,
    note:
      others.length > 0
        ? `the default builder: building ${targets.map(formatPlatform).join(', ')} (this machine's own); pass --platform for ${others.map(formatPlatform).join(', ')}`
        : undefined,
  };
}
