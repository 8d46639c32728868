export type { ExecResult, ExecSpec, Executor } from './executor.js';
export { createHostExecutor, type HostExecutorOptions } from './host.js';
export { HOST_ENV_ALLOWLIST, pickHostEnv } from './env.js';
