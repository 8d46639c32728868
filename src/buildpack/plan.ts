import { z } from 'zod';
import { PackfarmError } from '../util/errors.js';
import { parseToml } from '../util/toml.js';
import { parseWith } from '../util/validate.js';

/**
 * The Build Plan (buildpack.md "Phase #1: Detection > Process", "Data Format > Build Plan (TOML)"): what each
 * passing bin/detect wrote, and the resolution of a group's plans into plan.toml entries.
 */

// ---------------------------------------------------------------------------------------------------------
// plan.toml: the resolved plan the detector writes and the build phase reads (platform.md "plan.toml").

const nonEmpty = (what: string) => z.string().min(1, `${what} must not be empty`);

export const PlanProviderSchema = z.object({
  id: nonEmpty('id'),
  version: nonEmpty('version'),
  extension: z.boolean().optional(),
});
export type PlanProvider = z.output<typeof PlanProviderSchema>;

/** One require of the build plan; `metadata` is the buildpack's free-form data. */
export const PlanRequireSchema = z.object({
  name: nonEmpty('name'),
  metadata: z.record(z.string(), z.unknown()).optional(),
});
export type PlanRequire = z.output<typeof PlanRequireSchema>;

// An entry without `requires` (or without `providers`) contributes nothing to any buildpack's plan; the
// reference lifecycle reads it as empty rather than refusing the file, and so does packfarm.
export const PlanEntrySchema = z
  .object({
    providers: z.array(PlanProviderSchema).default([]),
    requires: z.array(PlanRequireSchema).default([]),
  })
  .refine((e) => e.requires.every((r) => r.name === e.requires[0]?.name), {
    message: 'all requires of an entry must have the same name',
    path: ['requires'],
  });
export type PlanEntry = z.output<typeof PlanEntrySchema>;

export const PlanFileSchema = z.object({ entries: z.array(PlanEntrySchema).default([]) });
export type PlanFile = z.output<typeof PlanFileSchema>;

// ---------------------------------------------------------------------------------------------------------
// bin/detect's Build Plan

export interface PlanSections {
  provides: { name: string }[];
  requires: PlanRequire[];
}

/** What one bin/detect wrote: a top-level alternative plus `[[or]]` alternatives. */
export interface DetectPlan {
  main: PlanSections;
  or: PlanSections[];
}

const requireSchema = z.looseObject({
  name: z.string().min(1, 'must not be empty'),
  metadata: z.record(z.string(), z.unknown()).optional(),
});
const sectionsShape = {
  provides: z.array(z.looseObject({ name: z.string().min(1, 'must not be empty') })).default([]),
  requires: z.array(requireSchema).default([]),
};
const detectPlanSchema = z.looseObject({
  ...sectionsShape,
  or: z.array(z.looseObject(sectionsShape)).default([]),
});

type RawSections = { provides: { name: string }[]; requires: z.output<typeof requireSchema>[] };

/**
 * Parse a buildpack's build plan output. `who` names the buildpack, `source` the file. A top-level `version`
 * in a require is deprecated (Buildpack API 0.3) but still honoured as `metadata.version`, as the spec asks;
 * only a require whose two versions disagree is refused.
 */
export function parseDetectPlan(text: string, who: string, source: string): DetectPlan {
  const where = `${who}: build plan ${source}`;
  const raw = parseWith(detectPlanSchema, parseToml(text, where), where, 'INVALID_BUILD_PLAN');
  const sections = (s: RawSections, path: string): PlanSections => ({
    provides: s.provides.map((p) => ({ name: p.name })),
    requires: s.requires.map((r, i) => {
      if (!('version' in r)) return { name: r.name, ...(r.metadata ? { metadata: r.metadata } : {}) };
      const top = (r as Record<string, unknown>).version;
      const metadata = { ...(r.metadata ?? {}) };
      if ('version' in metadata && String(metadata.version) !== String(top)) {
        throw new PackfarmError(
          'INVALID_BUILD_PLAN',
          `${where}: ${path}requires[${i}] (${r.name}) has "version" = ${JSON.stringify(top)} and "metadata.version" = ${JSON.stringify(metadata.version)}, which disagree`,
          { hint: 'write the version once, as [requires.metadata] version = "..."' },
        );
      }
      metadata.version = metadata.version ?? top;
      return { name: r.name, metadata };
    }),
  });
  return { main: sections(raw, ''), or: raw.or.map((s, i) => sections(s, `or[${i}].`)) };
}

/** A group member that passed detection, with its plan. `optional` and `extension` steer resolution. */
export interface PlanCandidate<T> {
  member: T;
  optional: boolean;
  extension?: boolean;
  id: string;
  version: string;
  plan: DetectPlan;
}

export interface ResolvedPlan<T> {
  /** The members that take part in the build, in group order. */
  members: T[];
  entries: PlanEntry[];
}

interface Option<T> {
  candidate: PlanCandidate<T>;
  sections: PlanSections;
  /** Only in its last alternative may an optional member be dropped; before that it must fit like others. */
  removable: boolean;
}

interface Dep<T> {
  providers: Option<T>[];
  requires: PlanRequire[];
  /** Requires seen while nobody had provided the name yet. */
  early: Option<T>[];
  /** Provides not (yet) followed by a require. */
  extra: Option<T>[];
}

export type PlanLog = (message: string) => void;

/**
 * Resolve a group's plans. Trials take one alternative per member, enumerated left to right, depth first;
 * the first trial that resolves wins. In a trial a provide must be required by the same or a later member and
 * a require must be provided by the same or an earlier one (a member's provides count before its requires).
 * A member breaking a rule fails the trial, unless it is optional and in its last alternative — then it is
 * dropped with all its provides and requires and the trial is checked again. Returns undefined when no trial
 * resolves.
 */
export function resolveBuildPlan<T>(
  candidates: readonly PlanCandidate<T>[],
  log: PlanLog = () => {},
): ResolvedPlan<T> | undefined {
  const optionsOf = (c: PlanCandidate<T>): Option<T>[] => {
    const all = [c.plan.main, ...c.plan.or];
    return all.map((sections, i) => ({
      candidate: c,
      sections,
      removable: c.optional && i === all.length - 1,
    }));
  };
  const perMember = candidates.map(optionsOf);
  let tries = 0;

  const search = (
    i: number,
    prefix: Option<T>[],
  ): { trial: Option<T>[]; deps: Map<string, Dep<T>> } | undefined => {
    if (i === perMember.length) {
      tries++;
      log(`Resolving plan... (try #${tries})`);
      return runTrial(prefix, log);
    }
    for (const option of perMember[i]!) {
      const found = search(i + 1, [...prefix, option]);
      if (found) return found;
    }
    return undefined;
  };

  const found = search(0, []);
  if (!found) return undefined;
  const entries: PlanEntry[] = [];
  for (const dep of found.deps.values()) {
    const providers: PlanEntry['providers'] = [];
    const seen = new Set<PlanCandidate<T>>();
    for (const p of dep.providers) {
      if (seen.has(p.candidate)) continue;
      seen.add(p.candidate);
      providers.push({
        id: p.candidate.id,
        version: p.candidate.version,
        ...(p.candidate.extension ? { extension: true } : {}),
      });
    }
    if (providers.length && dep.requires.length) entries.push({ providers, requires: dep.requires });
  }
  return { members: found.trial.map((o) => o.candidate.member), entries };
}

function buildDeps<T>(trial: readonly Option<T>[]): Map<string, Dep<T>> {
  const deps = new Map<string, Dep<T>>();
  const dep = (name: string) => {
    let d = deps.get(name);
    if (!d) {
      d = { providers: [], requires: [], early: [], extra: [] };
      deps.set(name, d);
    }
    return d;
  };
  for (const option of trial) {
    for (const p of option.sections.provides) dep(p.name).extra.push(option);
    for (const r of option.sections.requires) {
      const d = dep(r.name);
      d.providers.push(...d.extra);
      d.extra = [];
      if (d.providers.length === 0) d.early.push(option);
      else d.requires.push(r);
    }
  }
  return deps;
}

function label<T>(o: Option<T>): string {
  return `${o.candidate.id}@${o.candidate.version}`;
}

function runTrial<T>(
  start: Option<T>[],
  log: PlanLog,
): { trial: Option<T>[]; deps: Map<string, Dep<T>> } | undefined {
  let trial = start;
  for (;;) {
    const deps = buildDeps(trial);
    const drop = new Set<Option<T>>();
    for (const [name, d] of deps) {
      for (const o of d.early) {
        if (!o.removable) {
          log(`fail: ${label(o)} requires ${name}`);
          return undefined;
        }
        log(`skip: ${label(o)} requires ${name}`);
        drop.add(o);
      }
    }
    for (const [name, d] of deps) {
      for (const o of d.extra) {
        if (!o.removable) {
          log(`fail: ${label(o)} provides unused ${name}`);
          return undefined;
        }
        log(`skip: ${label(o)} provides unused ${name}`);
        drop.add(o);
      }
    }
    if (drop.size === 0) {
      if (trial.length === 0) {
        log('fail: no viable buildpacks in group');
        return undefined;
      }
      return { trial, deps };
    }
    trial = trial.filter((o) => !drop.has(o));
  }
}
