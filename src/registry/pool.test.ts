import { describe, expect, it } from 'vitest';
import { createRegistryStore } from '../image/registry-store.js';
import { createRegistryClientPool } from './pool.js';

describe('registry client pools', () => {
  it('share one client per registry and options inside a pool, and none across pools', async () => {
    const a = createRegistryClientPool();
    const b = createRegistryClientPool();
    const opts = { registry: '127.0.0.1:5999', insecureRegistries: ['127.0.0.1:5999'] };
    expect(a.client(opts)).toBe(a.client({ ...opts }));
    expect(a.client(opts)).not.toBe(b.client(opts));
    expect(a.client({ ...opts, userAgent: 'other' })).not.toBe(a.client(opts));
    expect(a.size).toBe(2);
    await a.close();
    expect(a.size).toBe(0);
    await b.close();
  });

  it('give stores of one build one client per registry, released when the build closes its pool', async () => {
    const pool = createRegistryClientPool();
    createRegistryStore({ registry: 'reg.example', repository: 'app' }, { pool });
    createRegistryStore({ registry: 'reg.example', repository: 'run' }, { pool });
    createRegistryStore({ registry: 'other.example', repository: 'app' }, { pool });
    expect(pool.size).toBe(2);
    await pool.close();
    expect(pool.size).toBe(0);
  });
});
