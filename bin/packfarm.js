#!/usr/bin/env node
import { main } from '../dist/cli/main.js';

// `packfarm … | head`: a reader that stops early is not an error; stop quietly, as other CLIs do.
for (const stream of [process.stdout, process.stderr]) {
  stream.on('error', (err) => {
    if (err.code === 'EPIPE') process.exit(process.exitCode ?? 0);
    throw err;
  });
}

process.exitCode = await main(process.argv.slice(2));
