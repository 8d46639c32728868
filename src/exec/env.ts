// The allowlists live in the executor's room so that both the executor and the build environment model
// (buildpack/env.ts) use one list, and exec imports nothing from buildpack.

/** The POSIX path variables a buildpack may inherit and earlier buildpacks may extend. */
export const POSIX_PATH_VARS: readonly string[] = [
  'PATH',
  'LD_LIBRARY_PATH',
  'LIBRARY_PATH',
  'CPATH',
  'PKG_CONFIG_PATH',
];

/**
 * Variables passed from the lifecycle's own environment to buildpacks. Everything else is dropped so the
 * platform's (or the developer's shell's) environment cannot leak into builds; user variables come only
 * through `<platform>/env/`.
 */
export const BUILD_ENV_ALLOWLIST: readonly string[] = [
  'CNB_STACK_ID',
  'HOSTNAME',
  'HOME',
  'HTTPS_PROXY',
  'https_proxy',
  'HTTP_PROXY',
  'http_proxy',
  'NO_PROXY',
  'no_proxy',
];

/**
 * Which of the lifecycle's own environment variables a buildpack process may see. Like the reference
 * lifecycle, buildpacks get only `HOME`, `HOSTNAME`, the proxy variables (upper and lower case), the
 * deprecated `CNB_STACK_ID` and the POSIX path variables (PATH, LD_LIBRARY_PATH, LIBRARY_PATH, CPATH,
 * PKG_CONFIG_PATH); everything else the platform runs with stays out. User variables reach buildpacks only
 * through `<platform>/env/` (unless `clear-env`), operator variables through `<build-config>/env/`.
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
