import { chmod, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { type BusyboxRunImage, writeBusyboxRunImage } from '../../src/builder/busybox-run-image.js';
import type { ImageStore } from '../../src/image/store.js';
import type { Platform } from '../../src/oci/platform.js';
import { busyboxFor } from './debian-packages.js';

/**
 * A small real build image for one platform: packfarm's busybox image (src/builder/busybox-run-image.ts) with
 * the busybox of that architecture from Debian's busybox-static, and the build image's CNB_USER_ID /
 * CNB_GROUP_ID (1000:1000, the image's `cnb` user).
 */
export async function writeBusyboxBuildImage(opts: {
  store: ImageStore;
  tag: string;
  platform: Platform;
  env?: string[];
}): Promise<BusyboxRunImage> {
  return writeBusyboxRunImage({
    store: opts.store,
    tag: opts.tag,
    platform: opts.platform,
    busyboxPath: await busyboxFor(opts.platform.architecture),
    env: ['CNB_USER_ID=1000', 'CNB_GROUP_ID=1000', ...(opts.env ?? [])],
    createdBy: 'packfarm test build image (busybox)',
  });
}

/**
 * A buildpack (`test/arch` 0.1, Buildpack API 0.12) whose bin/detect puts what it saw into its build plan
 * (machine, uid, argv, cwd, CNB_* paths) and whose bin/build records the same and more into a launch layer
 * `facts`: machine, uid/gid, sorted env, args, cwd, whether its own dir is writable.
 */
export async function writeFactsBuildpack(buildpacksDir: string): Promise<{ id: string; version: string }> {
  const dir = join(buildpacksDir, 'test_arch', '0.1');
  await mkdir(join(dir, 'bin'), { recursive: true });
  await writeFile(
    join(dir, 'buildpack.toml'),
    'api = "0.12"\n[buildpack]\nid = "test/arch"\nversion = "0.1"\n',
  );
  const detect = `#!/bin/sh
set -e
cat > "$CNB_BUILD_PLAN_PATH" <<EOT
[[provides]]
name = "arch"
[[requires]]
name = "arch"
[requires.metadata]
machine = "$(uname -m)"
uid = "$(id -u)"
argv1 = "$1"
argv2 = "$2"
pwd = "$(pwd)"
bpdir = "$CNB_BUILDPACK_DIR"
platform = "$CNB_PLATFORM_DIR"
canary = "\${PACKFARM_CANARY-unset}"
EOT
`;
  const build = `#!/bin/sh
set -e
L="$CNB_LAYERS_DIR/facts"
mkdir -p "$L"
uname -m > "$L/machine"
id -u > "$L/uid"
id -g > "$L/gid"
env | sort > "$L/env"
pwd > "$L/pwd"
echo "$1 $2 $3" > "$L/args"
if touch "$CNB_BUILDPACK_DIR/written" 2>/dev/null; then echo writable > "$L/bpdir"; else echo readonly > "$L/bpdir"; fi
cat "$CNB_BP_PLAN_PATH" > "$L/plan"
echo built > ./built-by-buildpack
printf '[types]\\nlaunch = true\\n' > "$L.toml"
printf '[[processes]]\\ntype = "facts"\\ncommand = ["cat", "%s/machine"]\\ndefault = true\\n' "$L" > "$CNB_LAYERS_DIR/launch.toml"
`;
  await writeFile(join(dir, 'bin', 'detect'), detect);
  await writeFile(join(dir, 'bin', 'build'), build);
  await chmod(join(dir, 'bin', 'detect'), 0o755);
  await chmod(join(dir, 'bin', 'build'), 0o755);
  return { id: 'test/arch', version: '0.1' };
}
