import { describe, expect, it } from 'vitest';
import * as api from './index.js';

describe('public API', () => {
  it('exports the phases, stores and copy as functions', () => {
    for (const name of [
      'detect',
      'build',
      'analyze',
      'restore',
      'exportImage',
      'exportCache',
      'openCache',
      'openLayoutStore',
      'createRegistryStore',
      'copyImage',
      'buildIndex',
      'writeLayer',
      'extractLayer',
      'createHostExecutor',
      'createOciExecutor',
      'prepareBuildImageRootfs',
      'createBuildImageExecutor',
      'detectPlatforms',
      'setupEmulation',
      'nodeInfo',
      'parseReference',
      'parsePlatform',
      'buildApp',
      'create',
      'rebase',
      'inspectApp',
      'downloadSbom',
      'resolveBuilder',
      'stageBuildpack',
    ]) {
      expect(typeof (api as Record<string, unknown>)[name], name).toBe('function');
    }
  });

  it('reports user errors as PackfarmError with a stable code', () => {
    try {
      api.parseReference('Not Valid');
      expect.unreachable();
    } catch (err) {
      expect(api.isPackfarmError(err, 'INVALID_REFERENCE')).toBe(true);
    }
  });
});
