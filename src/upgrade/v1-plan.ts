// What v2 rows a v1 database becomes: users, workspaces, and per canvas its blocks in order, their
// parents, their create operations' order, and what could not move as it was (counted by kind).
// Pure: the dry run reports it, the writer writes it, the verifier compares v2 with it.
// The rules are in docs/upgrade-v1.md; the reasons are v2's constraints (v1-normalize.ts).
import { createHash } from 'node:crypto';
import { v2Id, workspaceIdFor } from './v1-ids.ts';
import {
  canonicalJson, MAX_CONTENT_BYTES, normalizeContent, normalizeEmail, normalizePasswordHash, normalizeTitle, normalizeType,
  parseEmbedding, vectorBytes,
} from './v1-normalize.ts';
import type { V1Block, V1Canvas, V1User } from './v1-shape.ts';

export type WorkspacePer = 'owner' | 'one';

/** Counts by kind of what moved or changed on the way (docs/upgrade-v1.md, "The report"). */
export class Counts {
  readonly map = new Map<string, number>();
  add(key: string, n = 1): void { if (n !== 0) this.map.set(key, (this.map.get(key) ?? 0) + n); }
  get(key: string): number { return this.map.get(key) ?? 0; }
  merge(other: Counts): void { for (const [k, v] of other.map) this.add(k, v); }
}

export type PlannedUser = {
  v1Id: string; id: string; email: string | null; name: string | null; passwordHash: string | null; createdAt: string | null;
};

export function planUsers(users: V1User[], counts: Counts): PlannedUser[] {
  // an email is kept by its earliest user (created_at, then id); later ones lose it (GoTrue's
  // sign-in finds a user by lower(email), so two would be one account)
  const order = [...users].sort((a, b) =>
    (a.createdAt ?? '\uffff').localeCompare(b.createdAt ?? '\uffff') || Buffer.compare(Buffer.from(a.id), Buffer.from(b.id)));
  const emailOwner = new Map<string, string>();
  for (const u of order) {
    const email = normalizeEmail(u.email);
    if (email !== null && !emailOwner.has(email)) emailOwner.set(email, u.id);
  }
  const seen = new Set<string>();
  const planned: PlannedUser[] = [];
  for (const u of users) {
    const id = v2Id('user', u.id);
    if (seen.has(id)) { counts.add('users.duplicate_id'); continue; }
    seen.add(id);
    if (id !== u.id) counts.add('users.id_mapped');
    let email = normalizeEmail(u.email);
    if (email !== null && emailOwner.get(email) !== u.id) { counts.add('users.email_duplicate'); email = null; }
    const pw = normalizePasswordHash(u.passwordHash);
    if (pw.unusable) counts.add('users.password_unusable');
    planned.push({ v1Id: u.id, id, email, name: u.name?.trim() || null, passwordHash: pw.hash, createdAt: u.createdAt });
  }
  return planned;
}

export type PlannedWorkspace = {
  id: string; name: string; createdBy: string | null; members: { userId: string; role: 'owner' | 'editor' }[];
};

export type PlannedCanvas = {
  v1Id: string; id: string; workspaceId: string; title: string; ownerId: string | null; createdAt: string | null; updatedAt: string | null;
};

/** Workspaces and where each canvas goes: one workspace per owner (default), or one for everybody. */
export function planWorkspaces(users: PlannedUser[], canvases: V1Canvas[], per: WorkspacePer, counts: Counts,
  oneName = 'Workspace from v1'): { workspaces: PlannedWorkspace[]; canvases: PlannedCanvas[] } {
  const byV1 = new Map(users.map((u) => [u.v1Id, u]));
  const workspaces = new Map<string, PlannedWorkspace>();
  const planned: PlannedCanvas[] = [];
  const owners = new Set<string>();
  const seen = new Set<string>();
  for (const c of canvases) {
    const id = v2Id('canvas', c.id);
    if (seen.has(id)) { counts.add('canvases.duplicate_id'); continue; }
    seen.add(id);
    if (id !== c.id) counts.add('canvases.id_mapped');
    const owner = c.ownerId === null ? undefined : byV1.get(c.ownerId);
    if (!owner) counts.add('canvases.owner_missing');
    else owners.add(owner.id);
    const title = normalizeTitle(c.title);
    if (title.changed) counts.add('canvases.title_fixed');
    let workspaceId: string;
    if (per === 'one') workspaceId = workspaceIdFor.one();
    else if (owner) {
      workspaceId = workspaceIdFor.owner(owner.id);
      if (!workspaces.has(workspaceId)) {
        const who = owner.name ?? owner.email ?? 'v1 user';
        workspaces.set(workspaceId, {
          id: workspaceId, name: Array.from(`${who}'s workspace`).slice(0, 200).join(''), createdBy: owner.id,
          members: [{ userId: owner.id, role: 'owner' }],
        });
      }
    } else {
      workspaceId = workspaceIdFor.unowned();
      if (!workspaces.has(workspaceId)) {
        workspaces.set(workspaceId, { id: workspaceId, name: 'Canvases without an owner (from v1)', createdBy: null, members: [] });
      }
    }
    planned.push({
      v1Id: c.id, id, workspaceId, title: title.title, ownerId: owner?.id ?? null, createdAt: c.createdAt,
      updatedAt: c.updatedAt ?? c.createdAt,
    });
  }
  if (per === 'one') {
    // v1 had no roles (anyone could edit anything): nobody loses the right to edit; canvas owners manage the workspace
    workspaces.set(workspaceIdFor.one(), {
      id: workspaceIdFor.one(), name: oneName, createdBy: null,
      members: users.map((u) => ({ userId: u.id, role: owners.has(u.id) ? 'owner' : 'editor' })),
    });
  }
  return { workspaces: [...workspaces.values()], canvases: planned };
}

export type PlannedBlock = {
  v1Id: string; id: string; parentId: string | null;
  /** 0-based position in the canvas's v1 order (y_order, id); v2 keys are spread in this order */
  rank: number;
  /** 1-based position of its create operation: parents before children, siblings in order (canvas_seq) */
  seq: number;
  type: string; content: string;
  createdAt: string | null; createdBy: string | null; updatedAt: string | null; updatedBy: string | null;
  vector: Float32Array | null; embeddingModel: string | null; embeddedAt: string | null;
};

export type CanvasBlocksPlan = {
  /** in v1 order (rank) */
  blocks: PlannedBlock[];
  /** in create-operation order (seq) */
  operations: PlannedBlock[];
  checksum: string;
  counts: Counts;
};

/**
 * A canvas's blocks (given in v1 order). Parents must be blocks of the same canvas (else the
 * block moves to the top level) and may not form a cycle (the cycle's first block in v1 order
 * moves to the top level); authors must be v1 users (else unknown); embeddings must be 1536
 * finite numbers (else the block is queued for embedding).
 */
export function planCanvasBlocks(blocks: V1Block[], userIds: Map<string, string>): CanvasBlocksPlan {
  const counts = new Counts();
  const byV1 = new Map<string, number>();
  blocks.forEach((b, i) => { if (!byV1.has(b.id)) byV1.set(b.id, i); });
  const parentIndex: (number | null)[] = blocks.map((b) => {
    if (b.parentId === null) return null;
    const p = byV1.get(b.parentId);
    if (p === undefined) { counts.add('blocks.parent_not_on_canvas'); return null; }
    return p;
  });
  // cycles: walk up from each block; a walk that meets itself found a cycle
  const state = new Uint8Array(blocks.length); // 0 new, 1 on the current walk, 2 done
  for (let start = 0; start < blocks.length; start++) {
    const path: number[] = [];
    let i: number | null = start;
    while (i !== null && state[i] === 0) { state[i] = 1; path.push(i); i = parentIndex[i]!; }
    if (i !== null && state[i] === 1) {
      const cycle = path.slice(path.indexOf(i));
      const first = Math.min(...cycle);
      parentIndex[first] = null;
      counts.add('blocks.parent_cycle');
    }
    for (const p of path) state[p] = 2;
  }
  const user = (v1: string | null): string | null => {
    if (v1 === null) return null;
    const id = userIds.get(v1);
    if (id === undefined) { counts.add('blocks.author_unknown'); return null; }
    return id;
  };
  let prevKey: string | null = null;
  const planned: PlannedBlock[] = blocks.map((b, rank) => {
    const id = v2Id('block', b.id);
    if (id !== b.id) counts.add('blocks.id_mapped');
    const type = normalizeType(b.type);
    if (type.changed) counts.add('blocks.type_fixed');
    const content = normalizeContent(b.content);
    if (content.issue) counts.add(`blocks.content_${content.issue}`);
    if (Buffer.byteLength(content.json) > MAX_CONTENT_BYTES) counts.add('blocks.content_over_limit');
    if (b.orderKey === null) counts.add('blocks.y_order_missing');
    else if (b.orderKey === prevKey) counts.add('blocks.y_order_ties');
    prevKey = b.orderKey;
    let vector: Float32Array | null = null;
    if (b.embedding) {
      if (b.embedding.rows > 1) counts.add('embeddings.duplicate_rows', b.embedding.rows - 1);
      const parsed = parseEmbedding(b.embedding.raw);
      if ('values' in parsed) { vector = parsed.values; counts.add('embeddings.moved'); }
      else counts.add(`embeddings.${parsed.problem}`);
    }
    if (vector === null) counts.add('blocks.queued_for_embedding');
    const p = parentIndex[rank];
    return {
      v1Id: b.id, id, parentId: p === null || p === undefined ? null : v2Id('block', blocks[p]!.id), rank, seq: 0,
      type: type.type, content: content.json,
      createdAt: b.createdAt, createdBy: user(b.createdBy), updatedAt: b.updatedAt ?? b.createdAt, updatedBy: user(b.updatedBy),
      vector, embeddingModel: vector ? (b.embedding?.model?.trim() || 'v1') : null,
      embeddedAt: vector ? (b.embedding?.createdAt ?? null) : null,
    };
  });
  // create operations: depth first from the top level, siblings in v1 order (a parent is created before its children)
  const children = new Map<number | null, number[]>();
  parentIndex.forEach((p, i) => { const list = children.get(p) ?? []; list.push(i); children.set(p, list); });
  const operations: PlannedBlock[] = [];
  const stack = [...(children.get(null) ?? [])].reverse();
  while (stack.length > 0) {
    const i = stack.pop()!;
    operations.push(planned[i]!);
    planned[i]!.seq = operations.length;
    stack.push(...[...(children.get(i) ?? [])].reverse());
  }
  counts.add('blocks', planned.length);
  return { blocks: planned, operations, checksum: checksumOf(planned.map(blockLine)), counts };
}

/** The fields a block's checksum covers, in one line. Unknown times (null) are '*' on both sides. */
export type BlockState = {
  rank: number; id: string; parentId: string | null; type: string; content: string; vector: Float32Array | null;
  createdAt: string | null; createdBy: string | null; updatedAt: string | null; updatedBy: string | null;
};

export function blockLine(b: BlockState): string {
  const vec = b.vector ? createHash('sha1').update(vectorBytes(b.vector)).digest('hex') : '-';
  return [b.rank, b.id, b.parentId ?? '-', b.type, canonicalJson(b.content), vec, b.createdAt ?? '*', b.createdBy ?? '-',
    b.updatedAt ?? '*', b.updatedBy ?? '-'].join('\t');
}

export const checksumOf = (lines: string[]): string => {
  const h = createHash('sha256');
  for (const l of lines) h.update(l).update('\n');
  return h.digest('hex');
};
