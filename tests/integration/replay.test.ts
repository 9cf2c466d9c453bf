// Replay by since_seq under concurrent writers (spec: "server_seq ... Replay by since_seq must
// never miss a committed operation, even under concurrent writers"; seed defect: a global
// sequence alone lets a reader skip a row that commits late).
//
// 8 writers (each its own editor, own connection) make ~300 mutations across 3 canvases:
// creates (some under a parent, some after a sibling), content updates from the version they last
// saw (so some conflict or merge), moves and subtree deletes. Meanwhile one reader polls
// api.get_canvas_changes(canvas, since_seq = last seen, small page) for every canvas. Afterwards
// the reader drains, and:
//   * per canvas it saw exactly the applied operations of app.block_operations, each once, in
//     strictly increasing seq, including every op a writer was acknowledged;
//   * every page's watermark is consistent with its changes;
//   * replaying the log from 0 onto an empty map reproduces api.get_canvas_snapshot's blocks.
import { randomUUID } from 'node:crypto';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/index.ts';
import { testDatabase } from '../helpers/db.ts';
import { addCanvas, addMember, callAs, createCanvas, mutate, type MutationResult } from '../helpers/fixtures.ts';
import { prng } from '../../src/prng.ts';

const WRITERS = 8;
const CANVASES = 3;
const TOTAL_OPS = 304; // 38 per writer: under the default 100 mutations/min per user
const PAGE = 20;       // small pages, so has_more paging is exercised

type Block = Record<string, any> & { block_id: string; version: number; y_order: string };
type Change = {
  server_seq: number; action: 'create' | 'update' | 'move' | 'delete'; block_id: string; version: number;
  block: Block | null; client_op_id: string; deleted_ids: string[] | null;
};
type ChangesPage = { changes: Change[]; has_more: boolean; watermark: number };

describe('replay by since_seq under concurrent writers', () => {
  let db: Database;
  let owner: string;
  const canvases: string[] = [];
  const editors: string[] = [];

  beforeAll(async () => {
    db = testDatabase(WRITERS + 3); // 8 writers, 1 reader, 2 spare for checks
    const first = await createCanvas(db.sql);
    owner = first.users.owner!;
    canvases.push(first.canvasId);
    for (let i = 1; i < CANVASES; i++) canvases.push(await addCanvas(db.sql, owner, first.workspaceId, `Replay ${i}`));
    for (let i = 0; i < WRITERS; i++) editors.push(await addMember(db.sql, owner, first.workspaceId, 'editor', `writer${i}`));
  });
  afterAll(async () => db?.close());

  const changesPage = (canvasId: string, since: number, limit = PAGE) =>
    callAs<ChangesPage>(db.sql, owner, 'get_canvas_changes', [canvasId, since, limit]);

  /** Checks one page against the cursor it was read from; returns the new cursor. */
  function checkPage(page: ChangesPage, since: number, where: string): number {
    let last = since;
    for (const c of page.changes) {
      c.server_seq = Number(c.server_seq);
      if (!(c.server_seq > last)) throw new Error(`${where}: seq ${c.server_seq} after ${last} (not strictly increasing)`);
      last = c.server_seq;
    }
    const watermark = Number(page.watermark);
    if (watermark < last) throw new Error(`${where}: watermark ${watermark} below a change it returned (${last})`);
    // a complete page (has_more = false) reaches the watermark: the snapshot holds nothing beyond
    if (!page.has_more && last !== watermark) {
      throw new Error(`${where}: has_more = false but the changes end at ${last} while the watermark is ${watermark}`);
    }
    return last;
  }

  it('sees every committed op exactly once, in seq order, and the log rebuilds the snapshot', async () => {
    const seed = Date.now() % 100000;
    // what writers know: canvas -> block -> last version seen (shared, like collaborators on one canvas)
    const known = new Map(canvases.map((c) => [c, new Map<string, number>()]));
    const parents = new Map(canvases.map((c) => [c, new Set<string>()])); // blocks given children: deletes cascade
    const acked: Array<{ canvasId: string; seq: number; clientOpId: string }> = [];
    const tally: Record<string, number> = {};
    let writing = true;

    async function writer(w: number) {
      const rnd = prng(seed * 31 + w);
      const pick = <T>(xs: T[]): T | undefined => (xs.length ? xs[Math.floor(rnd() * xs.length)] : undefined);
      for (let k = 0; k < TOTAL_OPS / WRITERS && writing; k++) {
        const canvasId = canvases[Math.floor(rnd() * CANVASES)]!;
        const blocks = known.get(canvasId)!;
        const ids = [...blocks.keys()];
        const r = rnd();
        const clientOpId = `w${w}-${k}-${randomUUID()}`;
        let op: Parameters<typeof mutate>[3];
        if (ids.length < 4 || r < 0.4) {
          const patch: Record<string, unknown> = { type: 'text', content: { w, k } };
          const s = rnd();
          if (s < 0.3 && ids.length) patch.parent_id = pick(ids);
          else if (s < 0.6) patch.after_id = rnd() < 0.2 ? null : (pick(ids) ?? null);
          op = { action: 'create', clientOpId, patch };
        } else {
          const blockId = pick(ids)!;
          const baseVersion = blocks.get(blockId)!;
          if (r < 0.7) op = { action: 'update', blockId, baseVersion, clientOpId, patch: { content: { w, k, edit: true } } };
          else if (r < 0.88) {
            op = { action: 'move', blockId, baseVersion, clientOpId,
                   patch: { after_id: rnd() < 0.15 ? null : (pick(ids.filter((id) => id !== blockId)) ?? null) } };
          } else {
            const parent = rnd() < 0.5 ? pick([...parents.get(canvasId)!].filter((id) => blocks.has(id))) : undefined;
            op = { action: 'delete', blockId: parent ?? blockId, baseVersion: blocks.get(parent ?? blockId)!, clientOpId };
          }
        }
        const res: MutationResult & { deleted_ids?: string[] } = await mutate(db.sql, editors[w]!, canvasId, op);
        const key = `${op.action}:${res.status}${res.error ? `:${res.error.code}` : ''}`;
        tally[key] = (tally[key] ?? 0) + 1;
        if (res.status === 'success') {
          acked.push({ canvasId, seq: Number(res.server_seq), clientOpId });
          if (op.action === 'delete') for (const id of res.deleted_ids ?? [res.block_id!]) blocks.delete(id);
          else blocks.set(res.block_id!, res.version!);
          if (op.action === 'create' && op.patch?.parent_id) parents.get(canvasId)!.add(op.patch.parent_id as string);
        } else if (res.status === 'conflict' && res.block) {
          blocks.set(res.block_id!, res.version!); // rebase: next time from the current version
        } else if (res.error?.code === 'not_found' || res.error?.field === 'patch.parent_id' || res.error?.field === 'patch.after_id') {
          if (op.blockId) blocks.delete(op.blockId); // someone deleted it (or its parent/anchor): forget it
          const anchor = (op.patch?.parent_id ?? op.patch?.after_id) as string | undefined;
          if (anchor) blocks.delete(anchor);
        } else if (res.status !== 'conflict') {
          throw new Error(`writer ${w} (seed ${seed}): unexpected result ${JSON.stringify(res)} for ${JSON.stringify(op)}`);
        }
      }
    }

    // the reader: polls every canvas from the last seq it saw until the writers are done
    const seen = new Map(canvases.map((c) => [c, [] as Change[]]));
    const cursor = new Map(canvases.map((c) => [c, 0]));
    let polls = 0;
    async function readRound(): Promise<number> {
      let fresh = 0;
      for (const canvasId of canvases) {
        let page: ChangesPage;
        do {
          const since = cursor.get(canvasId)!;
          page = await changesPage(canvasId, since);
          polls++;
          cursor.set(canvasId, checkPage(page, since, `canvas ${canvases.indexOf(canvasId)} since ${since}`));
          seen.get(canvasId)!.push(...page.changes);
          fresh += page.changes.length;
        } while (page.has_more);
      }
      return fresh;
    }
    const reader = (async () => {
      while (writing) await readRound();
    })();
    reader.catch(() => { writing = false; }); // a reader failure stops the writers; it is rethrown below
    const writers = Promise.allSettled(editors.map((_, w) => writer(w)));
    const outcomes = await writers;
    writing = false;
    await reader;
    for (const o of outcomes) if (o.status === 'rejected') throw o.reason;
    while ((await readRound()) > 0); // final drain

    console.info(`replay: seed ${seed}, ${acked.length} applied, ${polls} polls, outcomes ${JSON.stringify(tally)}`);
    expect(acked.length, `seed ${seed}, outcomes ${JSON.stringify(tally)}`).toBeGreaterThan(TOTAL_OPS / 2);
    expect(polls).toBeGreaterThan(CANVASES * 3); // the reader really read while writers wrote

    let cascades = 0;
    for (const [i, canvasId] of canvases.entries()) {
      const mine = seen.get(canvasId)!;
      const seqs = mine.map((c) => c.server_seq);
      // exactly the applied operations of this canvas, each once, in order
      const logged = await db.sql`select server_seq, client_op_id from app.block_operations
                                   where canvas_id = ${canvasId} and status = 'success' order by server_seq`;
      expect(seqs, `canvas ${i}: reader vs block_operations (seed ${seed})`).toEqual(logged.map((r) => Number(r.server_seq)));
      expect(mine.map((c) => c.client_op_id)).toEqual(logged.map((r) => r.client_op_id));
      expect(new Set(seqs).size).toBe(seqs.length);
      // every op a writer was told succeeded is in the stream, at the seq it was told
      const bySeq = new Map(mine.map((c) => [c.server_seq, c.client_op_id]));
      for (const a of acked.filter((x) => x.canvasId === canvasId)) expect(bySeq.get(a.seq)).toBe(a.clientOpId);

      // replay from 0 (a second, independent full read) onto an empty map
      const log: Change[] = [];
      let since = 0;
      for (;;) {
        const page = await changesPage(canvasId, since, 100);
        since = checkPage(page, since, `replay canvas ${i}`);
        log.push(...page.changes);
        if (!page.has_more) break;
      }
      expect(log.map((c) => c.server_seq)).toEqual(seqs);
      cascades += log.filter((c) => (c.deleted_ids?.length ?? 0) > 1).length;
      const state = new Map<string, Block>();
      for (const c of log) {
        const where = `canvas ${i} seq ${c.server_seq} ${c.action} ${c.block_id}`;
        if (c.action === 'delete') {
          expect(state.has(c.block_id), `${where}: deletes a block the log never created`).toBe(true);
          expect(c.deleted_ids ?? [], `${where}: a delete change must list the deleted subtree`).toContain(c.block_id);
          for (const id of c.deleted_ids ?? [c.block_id]) {
            expect(state.has(id), `${where}: deleted_ids holds ${id}, which the log does not have`).toBe(true);
            state.delete(id);
          }
          continue;
        }
        expect(c.block, where).not.toBeNull();
        expect(c.block!.block_id).toBe(c.block_id);
        expect(c.block!.version).toBe(c.version);
        if (c.action === 'create') {
          expect(state.has(c.block_id), `${where}: created twice`).toBe(false);
          expect(c.version).toBe(1);
        } else {
          // nothing lost in between: each change moves the block exactly one version on
          expect(state.get(c.block_id)?.version, `${where}: version gap`).toBe(c.version - 1);
        }
        state.set(c.block_id, c.block!);
      }
      const snapshot = await callAs(db.sql, owner, 'get_canvas_snapshot', [canvasId]);
      expect(Number(snapshot.watermark)).toBe(seqs.at(-1) ?? 0);
      const replayed = [...state.values()].sort((a, b) => (a.y_order < b.y_order ? -1 : a.y_order > b.y_order ? 1 : 0));
      expect(replayed, `canvas ${i}: replayed log vs snapshot (seed ${seed})`).toEqual(snapshot.blocks);
    }
    expect(cascades, 'some deletes removed a subtree (deleted_ids beyond the block itself)').toBeGreaterThan(0);
  });
});
