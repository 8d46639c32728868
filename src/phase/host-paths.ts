import { hostToInside } from '../exec/view.js';
import type { BuildMetadata } from '../platform/metadata.js';

/**
 * Where buildpacks saw the app and layers dirs versus where the image holds them. The host executor runs
 * buildpacks in temp dirs; the image has /workspace and /layers. Whatever a buildpack recorded with the temp
 * paths in it (process commands, args, working dirs, launch env values) is rewritten at export.
 */
export interface HostPaths {
  appDir: string;
  layersDir: string;
}

export type PathRewriter = (value: string) => string;

/**
 * Replace whole paths and path prefixes: `/tmp/ws/x` → `/workspace/x`; `/tmp/ws2` and `/a/tmp/ws` stay. A path
 * starts a value or follows a space, `:`, `;`, `=` or a quote (PATH-like lists, shell command lines).
 */
export function hostPathRewriter(
  host: HostPaths,
  image: { appDir: string; layersDir: string },
): PathRewriter {
  // The same rewriting the oci executor applies to the paths it mounts (exec/view.ts).
  return hostToInside([
    [host.appDir, image.appDir],
    [host.layersDir, image.layersDir],
  ]);
}

/** Processes of metadata.toml with image paths. */
export function processesToImagePaths(md: BuildMetadata, rewrite: PathRewriter): BuildMetadata {
  return {
    ...md,
    processes: md.processes.map((p) => ({
      ...p,
      command: p.command.map(rewrite),
      args: p.args.map(rewrite),
      ...(p.workingDir !== undefined ? { workingDir: rewrite(p.workingDir) } : {}),
    })),
  };
}
