// v1 ids → v2 ids. v2 keys are uuids. A v1 id that is a uuid is kept (lower-cased, as Postgres
// prints uuids); any other id (Prisma's cuid() default on a SQLite v1, say) becomes a name-based
// uuid (RFC 4122 version 5, SHA-1) of its kind and text, so every run maps it to the same v2 id
// and a re-run finds what an earlier run wrote. docs/upgrade-v1.md, "Ids".
import { createHash } from 'node:crypto';
import { isUuid } from '../uuid.ts';

export { isUuid };

/** The namespace of every name-based id the upgrade makes (a fixed random uuid). */
export const UPGRADE_V1_NAMESPACE = '3f5b7c2e-8a41-4d6b-9e0f-6c1d2a7b8e95';

export type IdKind = 'user' | 'canvas' | 'block' | 'workspace';

/** RFC 4122 §4.3 version-5 uuid of `name` in `namespace`. */
export function uuidV5(namespace: string, name: string): string {
  const hash = createHash('sha1').update(Buffer.from(namespace.replace(/-/g, ''), 'hex')).update(name, 'utf8').digest();
  hash[6] = (hash[6]! & 0x0f) | 0x50;
  hash[8] = (hash[8]! & 0x3f) | 0x80;
  const hex = hash.subarray(0, 16).toString('hex');
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/** The v2 id of a v1 row: the uuid itself, or a name-based uuid of kind + id. */
export function v2Id(kind: IdKind, v1Id: string): string {
  return isUuid(v1Id) ? v1Id.toLowerCase() : uuidV5(UPGRADE_V1_NAMESPACE, `${kind}:${v1Id}`);
}

/** Ids of the workspaces the upgrade creates: one per owner, the single shared one, the unowned one. */
export const workspaceIdFor = {
  owner: (ownerV2Id: string) => uuidV5(UPGRADE_V1_NAMESPACE, `workspace:owner:${ownerV2Id}`),
  one: () => uuidV5(UPGRADE_V1_NAMESPACE, 'workspace:one'),
  unowned: () => uuidV5(UPGRADE_V1_NAMESPACE, 'workspace:unowned'),
};
