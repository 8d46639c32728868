import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readdir, readFile, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { Volume } from 'memfs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Digest } from '../oci/digest.js';
import {
  type FingerprintFs,
  LAYER_STATE_FILE,
  fingerprintDir,
  layerTracker,
  readLayerState,
  stableFingerprint,
  trustStat,
  wipeLayersExcept,
  writeLayerState,
} from './layer-state.js';

const exec = promisify(execFile);
const D1 = `sha256:${'1'.repeat(64)}` as Digest;
const D2 = `sha256:${'2'.repeat(64)}` as Digest;
const TAR = { prefix: 'layers/bp/l', uid: 1000, gid: 1000, mtime: '1980-01-01T00:00:01.000Z' };

function memTree() {
  const vol = Volume.fromJSON({ '/l/a.txt': 'aaaa', '/l/sub/b.txt': 'bb', '/l/sub/empty/.keep': '' });
  vol.symlinkSync('../a.txt', '/l/sub/link');
  return { vol, fs: vol.promises as unknown as FingerprintFs };
}

describe('fingerprintDir (memfs)', () => {
  it('is the same for an untouched tree and covers every entry', async () => {
    const { fs } = memTree();
    const a = await fingerprintDir('/l', fs);
    const b = await fingerprintDir('/l', fs);
    expect(a?.digest).toMatch(/^[0-9a-f]{64}$/);
    expect(a?.digest).toBe(b?.digest);
    expect(a?.entries).toBe(7); // . a.txt sub sub/b.txt sub/empty sub/empty/.keep sub/link
  });

  it('changes with content size, mode, a new file, a removed file, a link target and mtime', async () => {
    const changes: Array<(v: ReturnType<typeof memTree>['vol']) => void> = [
      (v) => v.writeFileSync('/l/a.txt', 'aaaaa'),
      (v) => v.chmodSync('/l/sub/b.txt', 0o600),
      (v) => v.writeFileSync('/l/new', ''),
      (v) => v.unlinkSync('/l/sub/b.txt'),
      (v) => {
        v.unlinkSync('/l/sub/link');
        v.symlinkSync('../other', '/l/sub/link');
      },
      (v) => v.utimesSync('/l/a.txt', 1, 1),
      (v) => v.chownSync('/l/a.txt', 4242, 4242),
    ];
    for (const change of changes) {
      const { vol, fs } = memTree();
      const before = await fingerprintDir('/l', fs);
      change(vol);
      const after = await fingerprintDir('/l', fs);
      expect(after?.digest, change.toString()).not.toBe(before?.digest);
    }
  });

  it('is undefined for a missing dir or a file', async () => {
    const { fs } = memTree();
    expect(await fingerprintDir('/nope', fs)).toBeUndefined();
    expect(await fingerprintDir('/l/a.txt', fs)).toBeUndefined();
  });
});

describe('layer state on disk', () => {
  let root: string;
  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), 'pf-layer-state-'));
  });
  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  it('sees a same-size rewrite with the mtime put back (ctime moves)', async () => {
    const dir = join(root, 'racy');
    await mkdir(dir);
    await writeFile(join(dir, 'f'), 'aaaa');
    const before = await stableFingerprint(dir);
    const st = await stat(join(dir, 'f'), { bigint: true });
    // touch -r copies the mtime to the nanosecond (utimes from JS rounds it).
    await exec('touch', ['-r', join(dir, 'f'), join(root, 'ref')]);
    await writeFile(join(dir, 'f'), 'bbbb');
    await exec('touch', ['-r', join(root, 'ref'), join(dir, 'f')]);
    const now = await stat(join(dir, 'f'), { bigint: true });
    expect(now.mtimeNs).toBe(st.mtimeNs);
    expect(now.size).toBe(st.size);
    expect(now.ctimeNs).not.toBe(st.ctimeNs);
    expect((await fingerprintDir(dir))?.digest).not.toBe(before?.digest);
  });

  it('fingerprints a tree written just now only once its ctimes are older than the racy window', async () => {
    const dir = join(root, 'fresh');
    await mkdir(dir);
    await writeFile(join(dir, 'f'), 'x');
    const t0 = Date.now();
    const fp = await stableFingerprint(dir);
    expect(fp).toBeDefined();
    // It waited: a later write gets a newer ctime than any the fingerprint saw.
    expect(BigInt(Date.now()) * 1_000_000n - fp!.maxCtimeNs).toBeGreaterThan(50_000_000n);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(0);
  });

  it('tracker: trusts a recorded diffID only for the same tree, tar and owner; save drops changed dirs', async () => {
    const dirA = join(root, 'ta');
    const dirB = join(root, 'tb');
    await mkdir(dirA);
    await mkdir(dirB);
    await writeFile(join(dirA, 'f'), 'a');
    await writeFile(join(dirB, 'f'), 'b');
    const owner = { uid: 1000, gid: 1000 };
    const t1 = layerTracker({ prior: undefined, owner });
    const fpA = await t1.fingerprint(dirA);
    const fpB = await t1.fingerprint(dirB);
    t1.note('bp:a', dirA, TAR, D1, fpA);
    t1.note('bp:b', dirB, TAR, D2, fpB);
    await writeFile(join(dirB, 'f'), 'B'); // changed after it was hashed: not recorded
    const path = join(root, LAYER_STATE_FILE);
    expect(await t1.save(path)).toBe(1);
    const state = await readLayerState(path);
    expect(Object.keys(state!.layers)).toEqual(['bp:a']);

    const t2 = layerTracker({ prior: state, owner });
    expect(t2.candidates).toEqual(['bp:a']);
    const now = await t2.fingerprint(dirA);
    expect(t2.trusted('bp:a', TAR, now)).toBe(D1);
    expect(await t2.recorded('bp:a', dirA)).toBe(D1);
    expect(t2.trusted('bp:a', { ...TAR, uid: 0 }, now)).toBeUndefined();
    expect(t2.trusted('bp:a', { ...TAR, mtime: '2020-01-01T00:00:00.000Z' }, now)).toBeUndefined();
    expect(t2.trusted('bp:b', TAR, now)).toBeUndefined();
    await writeFile(join(dirA, 'f'), 'A');
    expect(await t2.recorded('bp:a', dirA)).toBeUndefined();

    // Another owner: nothing is trusted, but the dirs are still candidates (to be removed).
    const t3 = layerTracker({ prior: state, owner: { uid: 2000, gid: 2000 } });
    expect(t3.prior).toBeUndefined();
    expect(t3.candidates).toEqual(['bp:a']);
  });

  it('reads a damaged or foreign state file as none', async () => {
    const path = join(root, 'bad.json');
    await writeFile(path, '{"version": 9, "layers": {}}');
    expect(await readLayerState(path)).toBeUndefined();
    await writeFile(path, 'not json');
    expect(await readLayerState(path)).toBeUndefined();
    expect(await readLayerState(join(root, 'missing.json'))).toBeUndefined();
    await writeLayerState(path, { owner: null, layers: {}, cacheBlobs: {} });
    expect(JSON.parse(await readFile(path, 'utf8')).version).toBe(1);
  });

  it('wipeLayersExcept keeps only the recorded layer dirs', async () => {
    const layers = join(root, 'layers');
    await mkdir(join(layers, 'my_bp', 'keep', 'deep'), { recursive: true });
    await writeFile(join(layers, 'my_bp', 'keep', 'deep', 'f'), '1');
    await mkdir(join(layers, 'my_bp', 'drop'), { recursive: true });
    await writeFile(join(layers, 'my_bp', 'keep.toml'), '');
    await writeFile(join(layers, 'my_bp', 'keep.sha'), '');
    await mkdir(join(layers, 'other', 'keep'), { recursive: true });
    await writeFile(join(layers, 'group.toml'), '');
    await symlink(join(layers, 'my_bp', 'keep'), join(layers, 'my_bp', 'linked'));
    await wipeLayersExcept(layers, new Set(['my_bp/keep', 'my_bp/linked']));
    expect(await readdir(layers)).toEqual(['my_bp']);
    expect(await readdir(join(layers, 'my_bp'))).toEqual(['keep']);
    expect(await readFile(join(layers, 'my_bp', 'keep', 'deep', 'f'), 'utf8')).toBe('1');
  });

  it('trustStat: on unless PACKFARM_TRUST_STAT says 0/false/no/off', () => {
    expect(trustStat({})).toBe(true);
    expect(trustStat({ PACKFARM_TRUST_STAT: '1' })).toBe(true);
    for (const v of ['0', 'false', 'NO', 'off']) expect(trustStat({ PACKFARM_TRUST_STAT: v })).toBe(false);
  });
});
