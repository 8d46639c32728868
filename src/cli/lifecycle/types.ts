import type { CliIO } from '../output.js';

/**
 * One lifecycle phase command (`packfarm lifecycle <name>`). The dispatcher in `cli/lifecycle.ts` prints the
 * list of phases from `name` + `summary`, prints `usage` for `<phase> --help`, and otherwise calls `run` with
 * the arguments after the phase name (lifecycle-style single-dash flags, see `platform/inputs.ts`).
 *
 * `env` is the environment the phase reads its `CNB_*` inputs from (the process env in production; tests pass
 * their own). `run` returns the process exit code (CNB lifecycle exit codes, `platform/exit-codes.ts`) and
 * prints only through `io`.
 */
export interface PhaseCommand {
  name: string;
  summary: string;
  usage: string;
  run(args: string[], io: CliIO, env: NodeJS.ProcessEnv): Promise<number>;
}
