#!/usr/bin/env node
import { main } from '../dist/cli/main.js';

// `packfarm build … | head`: a reader that stops early is not an error. The command still runs to its end
// (so temp dirs are removed and images are complete); what it would have printed is dropped.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code !== 'EPIPE') throw err;
  });
}

process.exitCode = await main(process.argv.slice(2));
