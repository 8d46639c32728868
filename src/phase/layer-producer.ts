import type { Stats } from 'node:fs';
import {
  type LayerOutput,
  type LayerResult,
  type MemoryEntry,
  writeLayer,
  writeLayerFromEntries,
} from '../archive/index.js';

/** What a layer of a new image is made of: a directory tree, or entries the lifecycle writes itself. */
export type LayerSpec =
  | {
      kind: 'dir';
      dir: string;
      /** Where the tree sits in the image, without the leading '/' (`layers/my_bp/node`, `workspace`). */
      prefix: string;
      /** Keep an entry (see `WriteLayerOptions.filter`); app slices use it to split the app dir. */
      filter?: ((relPath: string, stats: Stats) => boolean) | undefined;
    }
  | { kind: 'entries'; entries: readonly MemoryEntry[] };

/**
 * How the exporter gets a layer blob. The exporter decides what goes into the image and in which order; this
 * interface only turns one spec into bytes, so the exporter's steps can be unit-tested with a fake.
 */
export interface LayerProducer {
  /**
   * Write `spec` to `out` as a gzip blob; with `raw`, as the plain tar (its digest is the diffID), which is how
   * an unchanged layer is recognised without compressing it.
   */
  write(spec: LayerSpec, out: LayerOutput, opts?: { raw?: boolean }): Promise<LayerResult>;
}

export interface ArchiveProducerOptions {
  /** Owner of directory layers (buildpack layers, SBOM, app); the lifecycle's own entries are root's. */
  uid: number;
  gid: number;
  /** Every entry's mtime. */
  mtime: Date;
  signal?: AbortSignal | undefined;
}

/** The real producer: deterministic tar+gzip through archive/ (see `writeLayer`). */
export function archiveLayerProducer(opts: ArchiveProducerOptions): LayerProducer {
  return {
    write(spec, out, { raw = false } = {}) {
      const compression = raw ? { compression: 'none' as const } : {};
      if (spec.kind === 'entries')
        return writeLayerFromEntries(spec.entries, {
          ...compression,
          out,
          uid: 0,
          gid: 0,
          mtime: opts.mtime,
        });
      return writeLayer({
        ...compression,
        dir: spec.dir,
        prefix: spec.prefix,
        uid: opts.uid,
        gid: opts.gid,
        mtime: opts.mtime,
        out,
        ...(spec.filter ? { filter: spec.filter } : {}),
        ...(opts.signal ? { signal: opts.signal } : {}),
      });
    },
  };
}
