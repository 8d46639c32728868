export { type DigestAndSize, digestFile, digestStream } from './digest.js';
export {
  type ExtractEntryInfo,
  type ExtractLayerOptions,
  type ExtractResult,
  type ParentSymlinkPolicy,
  extractLayer,
} from './extract.js';
export {
  type LayerOptions,
  type LayerResult,
  type MemoryEntry,
  type SkippedEntry,
  type WriteLayerOptions,
  writeLayer,
  writeLayerFromEntries,
} from './layer-writer.js';
export { compareEntryNames } from './paths.js';
export { DEFAULT_GZIP_LEVEL, type LayerCompression, type LayerOutput } from './sink.js';
