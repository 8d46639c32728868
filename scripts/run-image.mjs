#!/usr/bin/env node
// Writes packfarm's demo run image: a static busybox (Debian's busybox-static package) with a `cnb` user, for
// the quick start and for trying `packfarm build` without pulling a base image from the internet.
//
//   node scripts/run-image.mjs oci:/tmp/pf/run:latest
//   node scripts/run-image.mjs localhost:5000/run:latest --insecure-registry localhost:5000
//
// It runs the compiled modules in dist/ (`npm ci` or `npm run build` makes them).
import { parseArgs } from 'node:util';
import { DEFAULT_BUSYBOX_PATH, writeBusyboxRunImage } from '../dist/builder/busybox-run-image.js';
import { openImage } from '../dist/image/transport.js';
import { isPackfarmError } from '../dist/util/errors.js';
import { ensureTools } from './ensure-tools.mjs';

const usage = `usage: node scripts/run-image.mjs DESTINATION [--insecure-registry HOST[:PORT]]... [--busybox PATH]

DESTINATION is oci:DIR[:TAG] (an OCI image layout, created when missing) or a registry reference REF[:TAG].
--busybox is a statically linked busybox for this machine's platform (default ${DEFAULT_BUSYBOX_PATH}).`;

const DISTRO = { name: 'packfarm-demo', version: '1' };

const OS_RELEASE = `NAME="packfarm demo run image"
ID=${DISTRO.name}
VERSION_ID=${DISTRO.version}
PRETTY_NAME="packfarm demo run image (busybox)"
HOME_URL="https://buildpacks.io"
`;

async function run(argv) {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      'insecure-registry': { type: 'string', multiple: true, default: [] },
      busybox: { type: 'string', default: DEFAULT_BUSYBOX_PATH },
      help: { type: 'boolean', short: 'h' },
    },
  });
  if (values.help) {
    console.log(usage);
    return 0;
  }
  if (positionals.length !== 1) {
    console.error(usage);
    return 2;
  }
  const dest = await openImage(positionals[0], {
    insecureRegistries: values['insecure-registry'],
    create: true,
  });
  if (!dest.tag) {
    console.error(`${positionals[0]}: give a tag to write the run image under, not a digest`);
    return 2;
  }
  // The default busybox comes from Debian's busybox-static: installed here when running as root, else the
  // exact apt-get command is printed.
  if (values.busybox === DEFAULT_BUSYBOX_PATH && !ensureTools(['busybox'], 'the demo run image')) return 1;
  const image = await writeBusyboxRunImage({
    store: dest.store,
    tag: dest.tag,
    busyboxPath: values.busybox,
    labels: {
      'io.buildpacks.base.distro.name': DISTRO.name,
      'io.buildpacks.base.distro.version': DISTRO.version,
      'io.buildpacks.rebasable': 'true',
    },
    extraFiles: { 'etc/os-release': OS_RELEASE },
    createdBy: 'packfarm scripts/run-image.mjs (busybox-static)',
  });
  const p = image.platform;
  console.log(
    `wrote run image ${dest.display} (${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}) ${image.digest}`,
  );
  return 0;
}

try {
  process.exitCode = await run(process.argv.slice(2));
} catch (err) {
  if (!isPackfarmError(err)) throw err;
  console.error(`error: ${err.message}`);
  if (err.hint) console.error(`hint: ${err.hint}`);
  process.exitCode = err.exitCode;
}
