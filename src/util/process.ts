/**
 * Whether a process with this pid exists on this host. EPERM means it exists but belongs to another user;
 * only ESRCH means it is gone. Used to tell leftovers of dead processes (locks, staging dirs, temp files
 * named with a pid) from those of live ones.
 */
export function processAlive(pid: number): boolean {
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}
