// Verifies an upgraded database against the v1 source it came from: v1 is read again, planned
// again (the documented rules of v1-plan.ts), and compared with what v2 holds — counts, the order
// of every sibling list (v2 key order = v1 (y_order, id) order), a content checksum per canvas
// (ids, parents, types, content, vectors, authors, times), and the operation log (one create per
// block, canvas_seq 1..n with parents first, each logging the block as it is, and the canvas's
// watermarks). Run it right after the upgrade: an edit made in v2 since is a difference.
import type { Sql } from 'postgres';
import { canonicalJson, parseEmbedding } from './v1-normalize.ts';
import {
  blockLine, checksumOf, planCanvasBlocks, type BlockState, type PlannedCanvas, type PlannedUser, type PlannedWorkspace,
} from './v1-plan.ts';
import type { V1Source } from './v1-shape.ts';

export type VerifyResult = { differences: number; lines: string[] };

const fmt = (n: number) => n.toLocaleString('en-US');
const UTC_US = 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"';

export async function verifyUpgrade(target: Sql, source: V1Source, plan: {
  users: PlannedUser[]; workspaces: PlannedWorkspace[]; canvases: PlannedCanvas[];
}, log: (line: string) => void = () => {}): Promise<VerifyResult> {
  const shown: string[] = [];
  let differences = 0;
  const diff = (msg: string) => { differences++; if (shown.length < 30) shown.push(`difference: ${msg}`); };
  const stats = { users: 0, members: 0, workspaces: 0, canvases: 0, checksums: 0, blocks: 0, siblingLists: 0, vectors: 0, queued: 0, embeddedSince: 0, ops: 0, maxKey: 0 };

  // users
  const wantUsers = new Map(plan.users.map((u) => [u.id, u]));
  const ids = [...wantUsers.keys()];
  for (let i = 0; i < ids.length; i += 5000) {
    const rows = await target<{ id: string; email: string | null; pw: string | null; name: string | null; taken: boolean }[]>`
      select u.id::text, u.email, u.encrypted_password as pw, u.raw_user_meta_data ->> 'name' as name,
             exists (select from auth.users o where lower(o.email) = lower(w.email) and o.id <> u.id) as taken
      from unnest(${ids.slice(i, i + 5000)}::uuid[], ${ids.slice(i, i + 5000).map((id) => wantUsers.get(id)!.email)}::text[]) as w(id, email)
      join auth.users u on u.id = w.id`;
    for (const r of rows) {
      const want = wantUsers.get(r.id)!;
      const emailOk = r.email === want.email || (r.email === null && r.taken);
      if (!emailOk) diff(`user ${r.id}: email ${r.email} (expected ${want.email})`);
      else if (r.pw !== want.passwordHash) diff(`user ${r.id}: password hash differs`);
      else if ((r.name ?? null) !== want.name) diff(`user ${r.id}: name ${r.name} (expected ${want.name})`);
      else stats.users++;
    }
    const found = new Set(rows.map((r) => r.id));
    for (const id of ids.slice(i, i + 5000)) if (!found.has(id)) diff(`user ${id} (v1 ${wantUsers.get(id)!.v1Id}) is missing`);
  }

  // workspaces and members
  const wsIds = plan.workspaces.map((w) => w.id);
  const wsRows = await target<{ id: string; created_by: string | null }[]>`
    select workspace_id::text as id, created_by::text from app.workspaces where workspace_id = any(${wsIds}::uuid[])`;
  const wsFound = new Map(wsRows.map((r) => [r.id, r]));
  const memberRows = await target<{ w: string; u: string; role: string }[]>`
    select workspace_id::text as w, user_id::text as u, role::text from app.workspace_members where workspace_id = any(${wsIds}::uuid[])`;
  const members = new Set(memberRows.map((r) => `${r.w}|${r.u}|${r.role}`));
  const membersOf = new Map<string, { w: string; u: string; role: string }[]>();
  for (const r of memberRows) { const list = membersOf.get(r.w) ?? []; list.push(r); membersOf.set(r.w, list); }
  for (const w of plan.workspaces) {
    const row = wsFound.get(w.id);
    if (!row) { diff(`workspace ${w.id} (${w.name}) is missing`); continue; }
    // a workspace with the id but another creator is not the upgrade's (v1-write.ts writeWorkspaces)
    if (row.created_by !== w.createdBy) {
      diff(`workspace ${w.id} (${w.name}): created_by ${row.created_by} (expected ${w.createdBy}): not written by this upgrade`);
    } else stats.workspaces++;
    const planned = new Set(w.members.map((m) => `${m.userId}|${m.role}`));
    for (const m of w.members) {
      if (members.has(`${w.id}|${m.userId}|${m.role}`)) stats.members++;
      else diff(`workspace ${w.id}: member ${m.userId} as ${m.role} is missing`);
    }
    // and nobody the plan does not have (or in another role)
    for (const r of membersOf.get(w.id) ?? []) {
      if (!planned.has(`${r.u}|${r.role}`)) diff(`workspace ${w.id}: member ${r.u} as ${r.role} is not a planned member`);
    }
  }

  // canvases, blocks, operations
  const userIds = new Map(plan.users.map((u) => [u.v1Id, u.id]));
  const byV1 = new Map(plan.canvases.map((c) => [c.v1Id, c]));
  const seen = new Set<string>();
  const checkCanvas = async (canvas: PlannedCanvas, blocks: Parameters<typeof planCanvasBlocks>[0]) => {
    const expected = planCanvasBlocks(blocks, userIds);
    const [c] = await target<{ workspace_id: string; title: string; created_by: string | null; last_seq: string; last_canvas_seq: string; checksum: string | null }[]>`
      select c.workspace_id::text, c.title, c.created_by::text, c.last_seq::text, c.last_canvas_seq::text, p.checksum
      from app.canvases c left join app.upgrade_v1_progress p on p.canvas_id = c.canvas_id where c.canvas_id = ${canvas.id}`;
    if (!c) { diff(`canvas ${canvas.id} (v1 ${canvas.v1Id}) is missing`); return; }
    const where = `canvas ${canvas.id}`;
    if (c.workspace_id !== canvas.workspaceId) diff(`${where}: workspace ${c.workspace_id} (expected ${canvas.workspaceId})`);
    if (c.title !== canvas.title) diff(`${where}: title ${JSON.stringify(c.title)} (expected ${JSON.stringify(canvas.title)})`);
    if (c.created_by !== canvas.ownerId) diff(`${where}: created_by ${c.created_by} (expected ${canvas.ownerId})`);
    if (c.checksum === null) diff(`${where}: no row in app.upgrade_v1_progress`);
    else if (c.checksum !== expected.checksum) diff(`${where}: v1 changed since it was upgraded (progress checksum differs)`);
    stats.canvases++;

    const rows = await target<{
      id: string; parent_id: string | null; type: string; content: string; y_order: string; version: number; created_at: string;
      created_by: string | null; updated_at: string; updated_by: string | null; vector: string | null; current: boolean; queued: boolean;
    }[]>`
      select b.block_id::text as id, b.parent_id::text, b.type, b.content::text, b.y_order, b.version,
             to_char(b.created_at at time zone 'UTC', ${UTC_US}) as created_at, b.created_by::text,
             to_char(b.updated_at at time zone 'UTC', ${UTC_US}) as updated_at, b.updated_by::text, b.vector::text,
             coalesce(b.embedded_hash = b.content_hash, false) as current,
             exists (select from app.embedding_outbox o where o.block_id = b.block_id)
               or exists (select from graphile_worker.jobs j where j.key = 'embed_block:' || b.block_id) as queued
      from app.blocks b where b.canvas_id = ${canvas.id} order by b.y_order`;
    const want = new Map(expected.blocks.map((b) => [b.id, b]));
    if (rows.length !== expected.blocks.length) diff(`${where}: ${rows.length} blocks (expected ${expected.blocks.length})`);
    const lines: string[] = [];
    const actualSiblings = new Map<string, string[]>();
    rows.forEach((r, rank) => {
      const w = want.get(r.id);
      stats.maxKey = Math.max(stats.maxKey, r.y_order.length);
      const parsed = r.vector === null ? null : parseEmbedding(r.vector);
      const vector = parsed && 'values' in parsed ? parsed.values : null;
      // a block queued for embedding may have been embedded since, by a worker, at its current
      // content: with a vector that is not v1's, or with none (a block without text)
      const embeddedSince = w !== undefined && w.vector === null && r.current;
      const state: BlockState = {
        rank, id: r.id, parentId: r.parent_id, type: r.type, content: r.content, vector: embeddedSince ? null : vector,
        createdAt: w?.createdAt === null ? null : r.created_at, createdBy: r.created_by,
        updatedAt: w?.updatedAt === null ? null : r.updated_at, updatedBy: r.updated_by,
      };
      lines.push(blockLine(state));
      const list = actualSiblings.get(r.parent_id ?? '') ?? [];
      list.push(r.id);
      actualSiblings.set(r.parent_id ?? '', list);
      if (!w) { diff(`${where}: block ${r.id} is not a v1 block of this canvas`); return; }
      if (r.version !== 1) diff(`${where}: block ${r.id} has version ${r.version} (changed since the upgrade?)`);
      if (w.vector !== null) { if (vector !== null) stats.vectors++; }
      else if (embeddedSince) stats.embeddedSince++;
      else if (r.queued) stats.queued++;
      else diff(`${where}: block ${r.id} has no v1 vector and is not queued for embedding`);
      stats.blocks++;
    });
    const checksum = checksumOf(lines);
    if (checksum === expected.checksum) stats.checksums++;
    else {
      const wantLines = new Map(expected.blocks.map((b) => [b.id, blockLine(b)]));
      const bad = rows.map((r, i) => ({ r, line: lines[i]! })).filter(({ r, line }) => wantLines.get(r.id) !== line);
      diff(`${where}: checksum differs (${bad.length} block(s), first ${bad[0]?.r.id ?? 'missing blocks'}: ` +
        `${bad[0] ? `${bad[0].line.slice(0, 200)} ≠ ${(wantLines.get(bad[0].r.id) ?? 'not expected').slice(0, 200)}` : ''})`);
    }
    // order: per parent, v2's key order = v1's (y_order, id) order
    const wantSiblings = new Map<string, string[]>();
    for (const b of expected.blocks) {
      const list = wantSiblings.get(b.parentId ?? '') ?? [];
      list.push(b.id);
      wantSiblings.set(b.parentId ?? '', list);
    }
    for (const [parent, list] of wantSiblings) {
      const got = actualSiblings.get(parent) ?? [];
      if (got.length === list.length && got.every((id, i) => id === list[i])) stats.siblingLists++;
      else diff(`${where}: children of ${parent || 'the top level'} are in another order than in v1`);
    }
    // the operation log: what replay from canvas_seq 1 rebuilds
    const ops = await target<{ block_id: string; canvas_seq: string; server_seq: string; action: string; new_version: number; same: boolean }[]>`
      select o.block_id::text, o.canvas_seq::text, o.server_seq::text, o.action, o.new_version,
             coalesce(o.block = internal.block_json(b), false) as same
      from app.block_operations o left join app.blocks b on b.block_id = o.block_id
      where o.canvas_id = ${canvas.id} and o.status = 'success' and o.canvas_seq is not null order by o.canvas_seq`;
    const seqOf = new Map<string, number>();
    let lastServer = 0n;
    let opsOk = ops.length === expected.blocks.length;
    if (!opsOk) diff(`${where}: ${ops.length} operations (expected ${expected.blocks.length}: one create per block)`);
    ops.forEach((o, i) => {
      if (Number(o.canvas_seq) !== i + 1) { opsOk = false; diff(`${where}: canvas_seq ${o.canvas_seq} at position ${i + 1}`); }
      if (o.action !== 'create' || o.new_version !== 1 || !o.same) { opsOk = false; diff(`${where}: operation ${o.canvas_seq} is not the create of block ${o.block_id} as it is`); }
      if (BigInt(o.server_seq) <= lastServer) { opsOk = false; diff(`${where}: server_seq does not increase at canvas_seq ${o.canvas_seq}`); }
      lastServer = BigInt(o.server_seq);
      seqOf.set(o.block_id, i + 1);
    });
    for (const b of expected.blocks) {
      const s = seqOf.get(b.id);
      if (s === undefined) { opsOk = false; diff(`${where}: block ${b.id} has no create operation`); }
      else if (b.parentId !== null && !((seqOf.get(b.parentId) ?? Infinity) < s)) { opsOk = false; diff(`${where}: block ${b.id} is created before its parent`); }
    }
    if (c.last_canvas_seq !== String(ops.length)) { opsOk = false; diff(`${where}: last_canvas_seq ${c.last_canvas_seq} (expected ${ops.length})`); }
    if (c.last_seq !== String(lastServer)) { opsOk = false; diff(`${where}: last_seq ${c.last_seq} (expected ${lastServer})`); }
    if (opsOk) stats.ops += ops.length;
  };

  let done = 0;
  for await (const group of source.blocksByCanvas()) {
    const canvas = byV1.get(group.canvasId);
    if (!canvas) continue; // blocks of a missing canvas: reported by the upgrade, never moved
    seen.add(canvas.v1Id);
    await checkCanvas(canvas, group.blocks);
    if (++done % 200 === 0) log(`verify: ${fmt(done)} canvases checked`);
  }
  for (const canvas of plan.canvases) if (!seen.has(canvas.v1Id)) await checkCanvas(canvas, []);

  const totalMembers = plan.workspaces.reduce((n, w) => n + w.members.length, 0);
  const lines = [
    `verify: users ${fmt(stats.users)} of ${fmt(plan.users.length)} as expected`,
    `verify: workspaces ${fmt(stats.workspaces)} of ${fmt(plan.workspaces.length)}, members ${fmt(stats.members)} of ${fmt(totalMembers)}`,
    `verify: canvases ${fmt(stats.canvases)} of ${fmt(plan.canvases.length)}; content checksums equal on ${fmt(stats.checksums)}`,
    `verify: blocks ${fmt(stats.blocks)} as expected; order equal to v1 in ${fmt(stats.siblingLists)} sibling lists; longest key ${stats.maxKey} characters`,
    `verify: embeddings ${fmt(stats.vectors)} moved and equal; ${fmt(stats.queued)} blocks queued for embedding` +
      (stats.embeddedSince > 0 ? `, ${fmt(stats.embeddedSince)} embedded since by a worker` : ''),
    `verify: operations ${fmt(stats.ops)} creates, canvas_seq 1..n per canvas with parents first, watermarks equal`,
    ...shown,
    differences > shown.length ? `difference: … and ${fmt(differences - shown.length)} more` : null,
    `verify: ${fmt(differences)} difference${differences === 1 ? '' : 's'}`,
  ].filter((l): l is string => l !== null);
  return { differences, lines };
}

