import { detectPlatforms, runnablePlatforms } from '../exec/binfmt.js';
import { formatPlatform } from '../oci/platform.js';

/**
 * What this machine offers as a farm node: its native platforms (amd64 also runs 386 …) and the foreign ones
 * a build container can run through a binfmt_misc (qemu-user) handler.
 */
export async function nodePlatforms(): Promise<{ native: string[]; emulated: string[] }> {
  const m = await detectPlatforms();
  const native = m.native.map(formatPlatform);
  const emulated = runnablePlatforms(m)
    .map(formatPlatform)
    .filter((p) => !native.includes(p));
  return { native, emulated: [...new Set(emulated)] };
}
