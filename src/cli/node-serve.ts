import { realpathSync } from 'node:fs';
import type { Command } from 'commander';
import { PackfarmError } from '../util/errors.js';
import { parsePositiveInt } from './image.js';
import type { CliIO } from './output.js';

/**
 * `packfarm node serve --stdio`: what the coordinator starts on a farm node over ssh. stdout belongs to the
 * protocol; diagnostics go to stderr (ssh hands them to the coordinator). `node run-job` is its job process.
 * Added to the `node` command group (cli/node.ts).
 */
export function registerNodeServeCommands(program: Command, io: CliIO): void {
  const node =
    program.commands.find((c) => c.name() === 'node') ??
    program.command('node').description('Run this machine as a farm build node');
  node
    .command('serve')
    .description('Serve the packfarm node protocol on stdin/stdout (started by the coordinator over ssh)')
    .option('--stdio', 'speak the protocol on stdin/stdout (the only transport)')
    .option('--max-jobs <n>', 'targets to build at once (default: the number of CPUs)', (v) =>
      parsePositiveInt(v),
    )
    .action(async (o: { stdio?: boolean; maxJobs?: number }) => {
      if (!o.stdio)
        throw new PackfarmError('INVALID_ARGS', 'node serve needs --stdio', {
          hint: 'the coordinator runs `packfarm node serve --stdio` over ssh; there is no listening mode',
        });
      const [{ serveNode }, { nodePlatforms }, { ensureDataDir }, { PACKFARM_VERSION }] = await Promise.all([
        import('../farm/serve.js'),
        import('../farm/platforms.js'),
        import('../image/data-dir.js'),
        import('../farm/manage.js'),
      ]);
      const self = realpathSync(process.argv[1] as string);
      await serveNode({
        input: process.stdin,
        output: process.stdout,
        dataDir: await ensureDataDir(process.env),
        version: PACKFARM_VERSION,
        ...(o.maxJobs ? { maxJobs: o.maxJobs } : {}),
        platforms: nodePlatforms,
        workerCommand: [process.execPath, self, 'node', 'run-job'],
        log: (line) => io.err(`packfarm node: ${line}`),
      });
    });
  node
    .command('run-job', { hidden: true })
    .description('Run one job of `node serve` (input on stdin, JSON lines out)')
    .action(async () => {
      const { runWorker, watchParent } = await import('../farm/job.js');
      // `node serve` cancels a job with SIGTERM (then SIGKILL to the group): abort the build, so the executor
      // stops the buildpack processes, which run in process groups of their own.
      const ac = new AbortController();
      const abort = () => ac.abort();
      process.once('SIGTERM', abort);
      watchParent(abort);
      // The outcome is the last JSON line (result or error); `node serve` reads that, not the exit code.
      await runWorker(process.stdin, (m) => io.out(JSON.stringify(m)), process.env, ac.signal);
      process.off('SIGTERM', abort);
      // `node serve` keeps the pipe open for renewed tokens: let go of it so the job process can end.
      process.stdin.destroy();
    });
}
