import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { sha256Digest } from '../oci/digest.js';
import { isPackfarmError } from '../util/errors.js';
import {
  createFrameDecoder,
  encodeBlobChunk,
  encodeMessage,
  type Frame,
  MAX_FRAME_BYTES,
  PROTOCOL_VERSION,
  openChannel,
  parseFromNode,
  parseToNode,
} from './protocol.js';

const hello = { type: 'hello', protocol: PROTOCOL_VERSION, packfarm: '0.1.0' };
const digest = sha256Digest('some blob');

function decodeAll(chunks: Buffer[]): Frame[] {
  const d = createFrameDecoder('test');
  const frames = chunks.flatMap((c) => d.push(c));
  d.end();
  return frames;
}

describe('frames', () => {
  const stream = Buffer.concat([
    encodeMessage(hello),
    encodeBlobChunk(digest, Buffer.from('some ')),
    encodeBlobChunk(digest, Buffer.from('blob')),
    encodeBlobChunk(digest, Buffer.alloc(0)),
    encodeMessage({ type: 'cancel', job: 'j1' }),
  ]);
  const expected = [
    { kind: 'json', value: hello },
    { kind: 'blob', digest, data: 'some ' },
    { kind: 'blob', digest, data: 'blob' },
    { kind: 'blob', digest, data: '' },
    { kind: 'json', value: { type: 'cancel', job: 'j1' } },
  ];
  const simplify = (fs: Frame[]) =>
    fs.map((f) => (f.kind === 'json' ? { kind: f.kind, value: f.value } : { ...f, data: f.data.toString() }));

  it('decodes frames merged into one chunk', () => {
    expect(simplify(decodeAll([stream]))).toEqual(expected);
  });

  it('decodes the same frames split at every byte boundary', () => {
    for (const size of [1, 2, 3, 5, 7, 13, 64]) {
      const chunks: Buffer[] = [];
      for (let i = 0; i < stream.length; i += size) chunks.push(stream.subarray(i, i + size));
      expect(simplify(decodeAll(chunks))).toEqual(expected);
    }
  });

  it('keeps a partial frame pending and refuses a stream that ends inside one', () => {
    const d = createFrameDecoder('test');
    expect(d.push(stream.subarray(0, 10))).toEqual([]);
    expect(d.pending).toBe(10);
    expect(() => d.end()).toThrow(/ended inside a frame \(10 bytes left over\)/);
  });

  it('refuses a bad length, an unknown kind, bad JSON and a short blob frame', () => {
    const cases: Array<[Buffer, RegExp]> = [
      [Buffer.from([0, 0, 0, 0, 1]), /bad frame length 0/],
      [Buffer.from('SSH-2.0-banner\r\n'), /bad frame length/],
      [
        Buffer.from([0xff, 0, 0, 0]),
        new RegExp(`bad frame length \\d+ \\(expected 1 to ${MAX_FRAME_BYTES}\\)`),
      ],
      [Buffer.from([0, 0, 0, 2, 9, 0]), /unknown frame kind 9/],
      [Buffer.from([0, 0, 0, 3, 1, 0x7b, 0x7b]), /not valid JSON/],
      [Buffer.from([0, 0, 0, 3, 2, 1, 2]), /shorter than its digest/],
    ];
    for (const [bytes, re] of cases) {
      const d = createFrameDecoder('test');
      let err: unknown;
      try {
        d.push(bytes);
      } catch (e) {
        err = e;
      }
      expect(isPackfarmError(err, 'PROTOCOL_ERROR')).toBe(true);
      expect((err as Error).message).toMatch(re);
    }
  });
});

describe('messages', () => {
  it('validates both directions and names the field', () => {
    expect(parseToNode(hello, 'test').type).toBe('hello');
    expect(() => parseToNode({ type: 'have', id: 'x', digests: ['sha256:zz'] }, 'from coordinator')).toThrow(
      /from coordinator: invalid content: digests\[0\]/,
    );
    expect(() => parseFromNode({ type: 'launch-missiles' }, 'node a')).toThrow(/node a: invalid content/);
    const ok = parseFromNode(
      {
        type: 'hello',
        protocol: PROTOCOL_VERSION,
        packfarm: '0.1.0',
        node: { native: ['linux/amd64'], emulated: [], cpus: 2, maxJobs: 1, runningJobs: 0, hostname: 'h' },
      },
      'node a',
    );
    expect(ok.type).toBe('hello');
  });

  it('protocol 4: a job’s token request and the answer (a credential or an error, exactly one)', () => {
    expect(
      parseFromNode({ type: 'token-request', job: 'j', id: 't1', registry: 'r.example' }, 'node a'),
    ).toEqual({ type: 'token-request', job: 'j', id: 't1', registry: 'r.example' });
    expect(() => parseFromNode({ type: 'token-request', job: 'j', id: 't1' }, 'node a')).toThrow(/registry/);
    const credential = {
      registry: 'r.example',
      registryToken: 't',
      expiresAt: 3000,
      issuedAt: 1000,
      scopes: ['repository:a:pull'],
    };
    expect(parseToNode({ type: 'token', job: 'j', id: 't1', credential }, 'coordinator')).toMatchObject({
      credential,
    });
    expect(
      parseToNode({ type: 'token', job: 'j', id: 't1', error: { code: 'X', message: 'no' } }, 'c'),
    ).toMatchObject({ error: { code: 'X' } });
    expect(() => parseToNode({ type: 'token', job: 'j', id: 't1' }, 'c')).toThrow(/exactly one/);
    expect(() =>
      parseToNode(
        { type: 'token', job: 'j', id: 't1', credential, error: { code: 'X', message: 'no' } },
        'c',
      ),
    ).toThrow(/exactly one/);
  });

  it('protocol 3: local images, a builder dir and a cache dir in the job; cache blobs and state back', () => {
    const d = (c: string) => `sha256:${c.repeat(64)}`;
    const job = {
      type: 'run-target',
      job: 'linux/amd64#1',
      node: 'n',
      target: 'linux/amd64',
      credentials: [],
      spec: {
        platform: 'linux/amd64',
        app: { digest: d('a'), size: 1 },
        buildpacks: [],
        output: { kind: 'registry', image: 'r.example/app:latest' },
        untagged: false,
        env: [],
        insecureRegistries: [],
        clearCache: false,
        platformApi: '0.14',
        images: [
          {
            role: 'run',
            name: 'oci:/here/run:1',
            manifest: { digest: d('b'), size: 2, mediaType: 'application/vnd.oci.image.manifest.v1+json' },
            config: { digest: d('c'), size: 3 },
            layers: [{ digest: d('d'), size: 4 }],
          },
        ],
        builderDir: { digest: d('e'), size: 5, name: './builder' },
        cacheDir: { metadata: '{}', layers: [{ digest: d('f'), size: 6 }] },
      },
    };
    expect(parseToNode(job, 'c').type).toBe('run-target');
    const badRole = structuredClone(job);
    (badRole.spec.images[0] as { role: string }).role = 'launcher';
    expect(() => parseToNode(badRole, 'c')).toThrow(/spec\.images\[0\]\.role/);
    expect(
      parseFromNode({ type: 'have', id: 'x', job: 'j', digests: [d('f')], kind: 'cache' }, 'n').type,
    ).toBe('have');
    expect(() =>
      parseFromNode({ type: 'have', id: 'x', job: 'j', digests: [], kind: 'secrets' }, 'n'),
    ).toThrow(/kind/);
    const result = {
      type: 'result',
      job: 'j',
      result: { digest: d('1'), size: 1, mediaType: 'm', report: {}, cache: { metadata: '{}', layers: [] } },
    };
    expect(parseFromNode(result, 'n').type).toBe('result');
  });
});

describe('channel', () => {
  it('carries messages and blobs both ways over streams, with backpressure, counting bytes', async () => {
    const aToB = new PassThrough({ highWaterMark: 16 });
    const bToA = new PassThrough({ highWaterMark: 16 });
    const got: Frame[] = [];
    let closed = false;
    const a = openChannel({ input: bToA, output: aToB, source: 'a', onFrame: () => {}, onClose: () => {} });
    const b = openChannel({
      input: aToB,
      output: bToA,
      source: 'b',
      onFrame: (f) => got.push(f),
      onClose: () => {
        closed = true;
      },
    });
    const big = Buffer.alloc(700_000, 7);
    const bigDigest = sha256Digest(big);
    await a.send({ type: 'hello', protocol: PROTOCOL_VERSION, packfarm: 'x' });
    const sent = await a.sendBlob(bigDigest, PassThrough.from([big]));
    expect(sent).toBe(big.length);
    a.close();
    await new Promise((r) => setTimeout(r, 10));
    while (!closed) await new Promise((r) => setTimeout(r, 10));
    const blob = Buffer.concat(got.filter((f) => f.kind === 'blob').map((f) => (f as { data: Buffer }).data));
    expect(sha256Digest(blob)).toBe(bigDigest);
    expect(got[0]).toMatchObject({ kind: 'json', value: { type: 'hello' } });
    expect(b.bytesIn).toBe(a.bytesOut);
    expect(b.bytesOut).toBe(0);
  });

  it('reports a bad frame through onClose with the source named', async () => {
    const input = new PassThrough();
    const errors: unknown[] = [];
    openChannel({
      input,
      output: new PassThrough(),
      source: 'node x',
      onFrame: () => {},
      onClose: (e) => errors.push(e),
    });
    input.write(Buffer.from('Welcome to host!\n'));
    expect(errors).toHaveLength(1);
    expect(String(errors[0])).toMatch(/node x: bad frame length/);
  });
});
