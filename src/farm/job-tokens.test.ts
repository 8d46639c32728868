import { describe, expect, it } from 'vitest';
import { createJobTokens, refreshDelay, tokenLifetime } from './job-tokens.js';
import type { JobCredential } from './protocol.js';

/** A manual clock and timer queue: the test moves time; timers fire in order. */
function clock(start = 1_000_000) {
  let now = start;
  const timers: Array<{ at: number; fn: () => void; live: boolean }> = [];
  return {
    now: () => now,
    setTimer: (fn: () => void, ms: number) => {
      const t = { at: now + ms, fn, live: true };
      timers.push(t);
      return {
        cancel: () => {
          t.live = false;
        },
      };
    },
    /** Advance to `to`, firing every live timer due on the way. */
    advance(ms: number) {
      const to = now + ms;
      for (;;) {
        const due = timers.filter((t) => t.live && t.at <= to).sort((a, b) => a.at - b.at)[0];
        if (!due) break;
        due.live = false;
        now = due.at;
        due.fn();
      }
      now = to;
    },
    pending: () => timers.filter((t) => t.live).map((t) => t.at - now),
  };
}

const SCOPES = ['repository:app:pull,push', 'repository:run:pull'];
const token = (t: string, issuedAt: number, lifetime: number): JobCredential => ({
  registry: 'reg.example:5000',
  registryToken: t,
  scopes: SCOPES,
  issuedAt,
  expiresAt: issuedAt + lifetime,
});

describe('refresh scheduling', () => {
  it('renews a minute early for long tokens, half-way for short ones', () => {
    expect(refreshDelay(300_000)).toBe(240_000);
    expect(refreshDelay(3_600_000)).toBe(3_540_000);
    expect(refreshDelay(120_000)).toBe(60_000);
    expect(refreshDelay(3_000)).toBe(1_500);
    expect(refreshDelay(0)).toBe(0);
  });

  it('only a token the coordinator issued with its lifetime is renewable', () => {
    expect(tokenLifetime(token('a', 10, 3000))).toBe(3000);
    expect(tokenLifetime({ registry: 'r', registryToken: 'raw' })).toBeUndefined();
    expect(tokenLifetime({ registry: 'r', username: 'u', password: 'p' })).toBeUndefined();
  });

  it('asks before expiry, takes the answer, schedules the next; the live credential follows', async () => {
    const c = clock();
    const asked: Array<[string, string]> = [];
    const changed: string[] = [];
    const tokens = createJobTokens([token('first', c.now(), 3000)], {
      request: (id, registry) => asked.push([id, registry]),
      onChange: (_all, renewed) => changed.push(renewed.registryToken ?? ''),
      now: c.now,
      setTimer: c.setTimer,
    });
    const cred = await tokens.resolver(async () => undefined)('reg.example:5000');
    expect(cred && 'registryToken' in cred && cred.registryToken).toBe('first');
    expect(c.pending()).toEqual([1500]);
    c.advance(1499);
    expect(asked).toEqual([]);
    c.advance(1);
    expect(asked).toEqual([['t1', 'reg.example:5000']]);
    tokens.answer('t1', { credential: token('second', c.now(), 3000) });
    expect(changed).toEqual(['second']);
    // The same object the registry client cached now reads the new token.
    expect(cred && 'registryToken' in cred && cred.registryToken).toBe('second');
    expect(tokens.current()[0]?.registryToken).toBe('second');
    c.advance(1500);
    expect(asked.map((a) => a[0])).toEqual(['t1', 't2']);
    tokens.close();
    expect(c.pending()).toEqual([]);
  });

  it('a 401 renews at once (one request for concurrent callers); wider scopes or another registry are refused', async () => {
    const c = clock();
    const asked: string[] = [];
    const logs: string[] = [];
    const tokens = createJobTokens([token('first', c.now(), 300_000)], {
      request: (id) => asked.push(id),
      log: (m) => logs.push(m),
      now: c.now,
      setTimer: c.setTimer,
    });
    const cred = await tokens.resolver(async () => undefined)('reg.example:5000');
    if (!cred || !('registryToken' in cred) || !cred.renew) throw new Error('expected a renewable token');
    const a = cred.renew();
    const b = cred.renew();
    expect(asked).toEqual(['t1']);
    tokens.answer('t1', { credential: { ...token('wider', c.now(), 300_000), scopes: ['repository:*:*'] } });
    expect(await a).toBe(false);
    expect(await b).toBe(false);
    expect(cred.registryToken).toBe('first');
    expect(logs[0]).toContain('could not be renewed');

    const d = cred.renew();
    tokens.answer('t2', {
      credential: { ...token('elsewhere', c.now(), 300_000), registry: 'other.example' },
    });
    expect(await d).toBe(false);
    const e = cred.renew();
    tokens.answer('t3', { error: { code: 'REGISTRY_UNAUTHORIZED', message: 'login removed' } });
    expect(await e).toBe(false);
    expect(logs[2]).toContain('login removed');
    const f = cred.renew();
    tokens.answer('t4', { credential: token('fresh', c.now(), 300_000) });
    expect(await f).toBe(true);
    expect(cred.registryToken).toBe('fresh');
    tokens.close();
  });

  it('no answer in time: the current token is kept', async () => {
    const c = clock();
    const tokens = createJobTokens([token('first', c.now(), 300_000)], {
      request: () => {},
      now: c.now,
      setTimer: c.setTimer,
      answerTimeoutMs: 1000,
    });
    const p = tokens.renew('reg.example:5000');
    c.advance(1000);
    expect(await p).toBe(false);
    expect(tokens.current()[0]?.registryToken).toBe('first');
    tokens.close();
  });

  it('passwords and raw tokens are not renewed; other registries fall back to the node’s keychain', async () => {
    const asked: string[] = [];
    const tokens = createJobTokens(
      [
        { registry: 'basic.example', username: 'u', password: 'p' },
        { registry: 'raw.example', registryToken: 'raw' },
      ],
      { request: (id) => asked.push(id) },
    );
    const resolve = tokens.resolver(async (r) => ({ username: 'node', password: r }));
    expect(await resolve('basic.example')).toMatchObject({ username: 'u', password: 'p' });
    const raw = await resolve('raw.example');
    expect(raw && 'registryToken' in raw && raw.renew).toBeUndefined();
    expect(await resolve('third.example')).toEqual({ username: 'node', password: 'third.example' });
    expect(await tokens.renew('raw.example')).toBe(false);
    expect(asked).toEqual([]);
    tokens.close();
  });
});
