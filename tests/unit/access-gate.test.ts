import { describe, expect, it } from 'vitest';
import { AccessGate, accessChange, concerns, hasWriteScope } from '../../src/realtime/access.ts';
import type { BusMessage } from '../../src/realtime/bus.ts';
import { PresenceDiffFold } from '../../src/realtime/presence.ts';

// The re-authorization gate of src/realtime/access.ts: database messages wait while a socket's
// access is re-checked and are delivered in order only if access survived.

/** A check the test answers by hand: each call waits for `answer`. */
function manualCheck() {
  const pending: Array<{ resolve: (ok: boolean) => void; reject: (err: Error) => void }> = [];
  return {
    calls: () => pending.length,
    check: () => new Promise<boolean>((resolve, reject) => pending.push({ resolve, reject })),
    answer: (i: number, ok: boolean | Error) => (ok instanceof Error ? pending[i]!.reject(ok) : pending[i]!.resolve(ok)),
  };
}
const tick = () => new Promise((r) => setTimeout(r, 0));
const claims = (sub: string, scope?: string | string[]) =>
  ({ sub, role: 'authenticated' as const, exp: Math.floor(Date.now() / 1000) + 60, ...(scope !== undefined ? { scope } : {}) });

describe('AccessGate', () => {
  it('delivers at once when no re-check runs', () => {
    const got: number[] = [];
    const gate = new AccessGate(async () => true, () => {});
    gate.deliver(() => got.push(1));
    expect(got).toEqual([1]);
  });

  it('holds messages during a re-check and delivers them in order when access survives', async () => {
    const m = manualCheck();
    const got: number[] = [];
    const gate = new AccessGate(m.check, () => {});
    gate.recheck();
    gate.deliver(() => got.push(1));
    gate.deliver(() => got.push(2));
    expect(got).toEqual([]);
    m.answer(0, true);
    await tick();
    expect(got).toEqual([1, 2]);
    gate.deliver(() => got.push(3));
    expect(got).toEqual([1, 2, 3]);
  });

  it('drops held and later messages for good when access is lost', async () => {
    const m = manualCheck();
    const got: number[] = [];
    const gate = new AccessGate(m.check, () => {});
    gate.recheck();
    gate.deliver(() => got.push(1));
    m.answer(0, false);
    await tick();
    gate.deliver(() => got.push(2));
    gate.recheck();
    expect(got).toEqual([]);
    expect(m.calls()).toBe(1);
  });

  it('settled: at once without a re-check; else once every queued re-check is over, false once one refused', async () => {
    const m = manualCheck();
    const gate = new AccessGate(m.check, () => {});
    expect(await gate.settled()).toBe(true);
    gate.recheck();
    const outcomes: boolean[] = [];
    void gate.settled().then((ok) => outcomes.push(ok));
    gate.recheck(); // a change read during the check: settled waits for the check after it too
    m.answer(0, true);
    await tick();
    expect(outcomes).toEqual([]);
    m.answer(1, false);
    await tick();
    expect(outcomes).toEqual([false]);
    expect(await gate.settled()).toBe(false);
  });

  it('runs one more check after a change that arrived during a check, and never two at once', async () => {
    const m = manualCheck();
    const got: number[] = [];
    const gate = new AccessGate(m.check, () => {});
    gate.recheck();
    gate.recheck();
    gate.recheck();
    gate.deliver(() => got.push(1));
    expect(m.calls()).toBe(1);
    m.answer(0, true);
    await tick();
    expect(m.calls()).toBe(2); // the changes that came meanwhile get their own check
    expect(got).toEqual([]); // still held: the second check has not answered
    m.answer(1, true);
    await tick();
    expect(got).toEqual([1]);
  });

  it('retries a check that throws once, then gives up through onFailure', async () => {
    const m = manualCheck();
    const failures: unknown[] = [];
    const got: number[] = [];
    const gate = new AccessGate(m.check, (err) => failures.push(err), { retryDelayMs: 1 });
    gate.recheck();
    gate.deliver(() => got.push(1));
    m.answer(0, new Error('database down'));
    await new Promise((r) => setTimeout(r, 20));
    expect(m.calls()).toBe(2);
    m.answer(1, new Error('still down'));
    await tick();
    expect(failures.map((e) => (e as Error).message)).toEqual(['still down']);
    gate.deliver(() => got.push(2));
    expect(got).toEqual([]);
  });
});

describe('what a re-check holds is bounded', () => {
  it('keeps every database message, the newest droppable frames within the limits, and one entry per slot, in arrival order', async () => {
    const m = manualCheck();
    const got: string[] = [];
    const dropped: number[] = [];
    const gate = new AccessGate(m.check, () => {}, { held: { maxDroppable: 3, maxDroppableBytes: 100 }, onDropped: (n) => dropped.push(n) });
    gate.recheck();
    gate.deliver(() => got.push('db1'));
    for (let i = 1; i <= 1000; i++) gate.deliverDroppable(() => got.push(`b${i}`), 10);
    gate.deliverLatest('presence', () => got.push('p1'));
    gate.deliver(() => got.push('db2'));
    gate.deliverDroppable(() => got.push('big'), 60); // with b1000: 70 bytes, but 3 frames at most
    gate.deliverLatest('presence', () => got.push('p2'));
    gate.deliverDroppable(() => got.push('huge'), 101); // alone over the bytes: dropped itself
    m.answer(0, true);
    await tick();
    expect(dropped).toEqual([999]);
    expect(got).toEqual(['db1', 'b999', 'b1000', 'p2', 'db2', 'big']);
  });

  it('database messages past maxKept or maxKeptBytes: the gate gives up at once (onOverflow), delivers nothing held or later, and ignores the check\'s answer', async () => {
    const message = (bytes: number): BusMessage => ({
      id: '1', topic: 'canvas:c', event: 'block_op', extension: 'broadcast', private: true, payload: {}, payloadJson: 'é'.repeat(bytes / 2),
    });
    // each message: its payload's UTF-8 bytes + event (8) + topic (8)
    for (const [limits, sizes, overAt] of [
      [{ maxKept: 3 }, [10, 10, 10, 10], 3],
      [{ maxKeptBytes: 100 }, [40, 40, 40], 1], // 56 + 56 > 100
    ] as const) {
      const m = manualCheck();
      const got: number[] = [];
      let overflows = 0;
      const gate = new AccessGate(m.check, () => {}, { held: limits, onOverflow: () => overflows++ });
      gate.recheck();
      for (const [i, bytes] of sizes.entries()) {
        gate.deliver(() => got.push(i), message(bytes));
        expect(overflows).toBe(i >= overAt ? 1 : 0);
      }
      expect(gate.holding).toBe(false);
      m.answer(0, true);
      await tick();
      gate.deliver(() => got.push(99));
      gate.recheck();
      expect(got).toEqual([]);
      expect(m.calls()).toBe(1);
      expect(overflows).toBe(1);
    }
  });

  it('folds presence diffs into their net effect', () => {
    const meta = (ref: string, name: string) => ({ phx_ref: ref, name });
    const fold = new PresenceDiffFold();
    fold.add({ joins: { a: { metas: [meta('2', 'a2')] } }, leaves: { a: { metas: [meta('1', 'a1')] } } });
    fold.add({ joins: { a: { metas: [meta('3', 'a3')] } }, leaves: { a: { metas: [meta('2', 'a2')] } } });
    fold.add({ joins: { b: { metas: [meta('4', 'b4')] } }, leaves: {} });
    fold.add({ joins: {}, leaves: { b: { metas: [meta('4', 'b4')] } } });
    expect(fold.take()).toEqual({ joins: { a: { metas: [meta('3', 'a3')] } }, leaves: { a: { metas: [meta('1', 'a1')] } } });
    expect(fold.take()).toBeNull();
  });
});

describe('access_changed messages', () => {
  const message = (over: Partial<BusMessage>): BusMessage => ({
    id: '1', topic: 'canvas:c', event: 'access_changed', extension: 'broadcast', private: true,
    payload: { canvas_id: 'c', user_id: 'u', reason: 'workspace_member' }, payloadJson: '{}', ...over,
  });

  it('are recognised only as private broadcasts with event access_changed', () => {
    expect(accessChange(message({}))).toEqual({ canvasId: 'c', userId: 'u', reason: 'workspace_member' });
    expect(accessChange(message({ private: false }))).toBeNull(); // a public broadcast anyone could send
    expect(accessChange(message({ event: 'block_op' }))).toBeNull();
  });

  it('concern the named user, or everyone when user_id is null', () => {
    const change = accessChange(message({}))!;
    expect(concerns(change, claims('u'))).toBe(true);
    expect(concerns(change, claims('v'))).toBe(false);
    const everyone = accessChange(message({ payload: { canvas_id: 'c', user_id: null, reason: 'canvas_deleted' } }))!;
    expect(concerns(everyone, claims('v'))).toBe(true);
  });

  it('H1 write scope: none = full rights; otherwise canvas:{id}:write or canvas:*:write', () => {
    expect(hasWriteScope(claims('u'), 'c')).toBe(true);
    expect(hasWriteScope(claims('u', 'canvas:c:read'), 'c')).toBe(false);
    expect(hasWriteScope(claims('u', 'canvas:d:write canvas:c:write'), 'c')).toBe(true);
    expect(hasWriteScope(claims('u', ['canvas:*:write']), 'c')).toBe(true);
  });
});
