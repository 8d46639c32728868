#!/usr/bin/env -S node --
// `node --` ends node's own options: Node 20 otherwise takes `--env-file FILE` anywhere on the command line
// as its own flag (and exits 9 on a missing file) before packfarm's `build --env-file` could see it.
import { runCli } from '../dist/cli/main.js';

// `packfarm build … | head`: a reader that stops early is not an error. The command still runs to its end
// (so temp dirs are removed and images are complete); what it would have printed is dropped.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

process.exitCode = await runCli(process.argv.slice(2));
