import type { RegistryClient } from './client.js';
import { repositoryScope } from './scope.js';

/**
 * Whether the credentials at hand may push to a repository, asked the way the reference lifecycle's analyzer
 * asks before a build: open a blob upload session (which needs push) and cancel it at once. Nothing is
 * written. Resolves on success; rejects with the registry's error (denied, unauthorized, unreachable …).
 */
export async function checkPushAccess(client: RegistryClient, repository: string): Promise<void> {
  const scopes = [repositoryScope(repository, ['pull', 'push'])];
  const res = await client.request({
    method: 'POST',
    path: `/v2/${repository}/blobs/uploads/`,
    scopes,
    what: 'upload',
    repository,
    accept: [202],
  });
  await res.body.dump().catch(() => {});
  const location = res.headers.location;
  const text = Array.isArray(location) ? location[0] : location;
  if (!text) return;
  try {
    const cancel = await client.request({
      method: 'DELETE',
      url: new URL(text, await client.baseUrl()),
      scopes,
      what: 'upload',
      repository,
      accept: [200, 202, 204, 404],
    });
    await cancel.body.dump().catch(() => {});
  } catch {
    // The session expires on its own; cancelling is a courtesy.
  }
}
