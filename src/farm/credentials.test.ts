import { describe, expect, it } from 'vitest';
import type { BuildPlan, TargetPlan } from '../api/plan.js';
import { PackfarmError, isPackfarmError } from '../util/errors.js';
import { accessScopes, explainCredentialError, jobAccess } from './credentials.js';

const repo = (registry: string, repository: string) => ({ registryRepository: { registry, repository } });

describe('jobAccess', () => {
  it('push and pull on the output and cache, pull on the images the target reads; nothing for --tag outputs', () => {
    const plan = {
      options: {
        buildpacks: ['docker://bp.example/team/bp:1', './local-bp'],
        builder: 'reg.example/builders/base:1',
        cacheImage: 'reg.example/team/app-cache:latest',
      },
      outputs: [
        { store: repo('reg.example', 'team/app'), tags: ['latest'] },
        { store: repo('reg.example', 'team/extra'), tags: ['v1'] },
      ],
      previousImage: { store: repo('reg.example', 'team/old'), target: 'latest' },
      cache: undefined,
      project: undefined,
    } as unknown as BuildPlan;
    const target = {
      runImage: { name: 'mirror.example/run:1', store: repo('mirror.example', 'run') },
      buildImage: { name: 'reg.example/build:1', store: repo('reg.example', 'build') },
    } as unknown as TargetPlan;
    const access = jobAccess(plan, target);
    expect([...access.keys()].sort()).toEqual(['bp.example', 'mirror.example', 'reg.example']);
    expect(accessScopes(access.get('reg.example')!)).toEqual([
      'repository:build:pull',
      'repository:builders/base:pull',
      'repository:team/app-cache:pull,push',
      'repository:team/app:pull,push',
      'repository:team/old:pull',
    ]);
    expect(accessScopes(access.get('mirror.example')!)).toEqual(['repository:run:pull']);
    expect(accessScopes(access.get('bp.example')!)).toEqual(['repository:team/bp:pull']);
  });

  it('pull on project.toml’s docker:// buildpackages: pre/post always, its group unless --buildpack replaces it', () => {
    const project = {
      source: '/app/project.toml',
      group: [
        { uri: 'docker://bp.example/team/group-bp:1' },
        { uri: './local-bp' },
        { id: 'inline', script: { api: '0.10', inline: 'true' } },
      ],
      pre: [{ uri: 'docker://reg.example/pre-bp@sha256:' + 'a'.repeat(64) }],
      post: [{ uri: 'docker://bp.example/post-bp:2' }],
    };
    const base = {
      outputs: [{ store: repo('reg.example', 'team/app'), tags: ['latest'] }],
      previousImage: undefined,
      cache: undefined,
      project,
    };
    const target = {
      runImage: { name: 'reg.example/run:1', store: repo('reg.example', 'run') },
    } as unknown as TargetPlan;
    const fromProject = jobAccess({ ...base, options: { buildpacks: [] } } as unknown as BuildPlan, target);
    expect(accessScopes(fromProject.get('bp.example')!)).toEqual([
      'repository:post-bp:pull',
      'repository:team/group-bp:pull',
    ]);
    expect(accessScopes(fromProject.get('reg.example')!)).toEqual([
      'repository:pre-bp:pull',
      'repository:run:pull',
      'repository:team/app:pull,push',
    ]);
    // --buildpack replaces the group (not pre/post): no scope for the group's buildpackage.
    const flags = jobAccess(
      { ...base, options: { buildpacks: ['docker://other.example/bp:1'] } } as unknown as BuildPlan,
      target,
    );
    expect(accessScopes(flags.get('bp.example')!)).toEqual(['repository:post-bp:pull']);
    expect(accessScopes(flags.get('other.example')!)).toEqual(['repository:bp:pull']);
  });
});

describe('explainCredentialError', () => {
  const token = {
    registry: 'reg.example',
    registryToken: 'tok',
    expiresAt: Date.parse('2030-01-01T00:00:00Z'),
    scopes: ['repository:team/app:pull,push'],
  };
  const denied = new PackfarmError(
    'REGISTRY_DENIED',
    'POST https://reg.example/v2/other/blobs/uploads/: denied',
  );

  it('names the scoped token a registry refused', () => {
    const e = explainCredentialError(denied, [token], Date.parse('2029-12-31T23:00:00Z')) as PackfarmError;
    expect(e.code).toBe('REGISTRY_DENIED');
    expect(e.message).toBe(
      'reg.example refused the registry token the coordinator scoped for this job (repository:team/app:pull,push; expires 2030-01-01T00:00:00.000Z): POST https://reg.example/v2/other/blobs/uploads/: denied',
    );
  });

  it('says FARM_TOKEN_EXPIRED after the expiry', () => {
    const e = explainCredentialError(denied, [token], Date.parse('2030-01-01T00:02:00Z'));
    expect(isPackfarmError(e, 'FARM_TOKEN_EXPIRED')).toBe(true);
    expect((e as Error).message).toContain('expired at 2030-01-01T00:00:00.000Z, 120 s ago');
  });

  it('leaves other errors, and jobs without a token, alone', () => {
    const other = new PackfarmError('MANIFEST_UNKNOWN', 'x');
    expect(explainCredentialError(other, [token])).toBe(other);
    expect(explainCredentialError(denied, [{ registry: 'reg.example', username: 'u', password: 'p' }])).toBe(
      denied,
    );
  });
});
