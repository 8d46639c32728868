import { BUILD_ENV_ALLOWLIST, POSIX_PATH_VARS } from '../buildpack/env.js';

/**
 * Which of the lifecycle's own environment variables a buildpack process may see. Like the reference
 * lifecycle, buildpacks get only `HOME`, `HOSTNAME`, the proxy variables (upper and lower case), the
 * deprecated `CNB_STACK_ID` and the POSIX path variables (PATH, LD_LIBRARY_PATH, LIBRARY_PATH, CPATH,
 * PKG_CONFIG_PATH); everything else the platform runs with stays out. User variables reach buildpacks only
 * through `<platform>/env/` (unless `clear-env`), operator variables through `<build-config>/env/`.
 *
 * The list itself lives with the build environment model (buildpack/env.ts) so detect and build agree.
 */
export const HOST_ENV_ALLOWLIST: readonly string[] = [...BUILD_ENV_ALLOWLIST, ...POSIX_PATH_VARS];

/** The allowlisted subset of `host` (by default, this process' environment). */
export function pickHostEnv(
  host: Readonly<Record<string, string | undefined>> = process.env,
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const k of HOST_ENV_ALLOWLIST) {
    const v = host[k];
    if (v !== undefined) out[k] = v;
  }
  return out;
}
