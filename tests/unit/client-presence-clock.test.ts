import { afterEach, describe, expect, it, vi } from 'vitest';
import { CanvasPresence } from '../../packages/client/src/presence.ts';

// canvas.presence (packages/client/src/presence.ts) when the host's wall clock steps: its
// throttle and the pruning of peers not heard from are intervals of its own, timed on the
// monotonic clock, so a step of Date moves neither. Vitest's fake timers: setSystemTime steps
// Date alone, advanceTimersByTime moves the timers and performance.now.

const HOUR = 3_600_000;
afterEach(() => void vi.useRealTimers());

describe('CanvasPresence when the wall clock steps', () => {
  it('after a step back of an hour, the next presence goes out within the throttle, not an hour later', () => {
    vi.useFakeTimers();
    const sent: unknown[] = [];
    const presence = new CanvasPresence((cursor) => void sent.push(cursor), (err) => { throw err; });
    presence.set({ cursor: { x: 1, y: 1 } });
    expect(sent).toHaveLength(1);
    vi.setSystemTime(Date.now() - HOUR);
    presence.set({ cursor: { x: 2, y: 2 } });
    vi.advanceTimersByTime(300); // the throttle: 4 a second
    expect(sent).toHaveLength(2);
    expect(sent[1]).toMatchObject({ cursor: { x: 2, y: 2 } });
    presence.close();
  });

  it('after a step forward of an hour, a peer heard a moment ago is not dropped as stale', () => {
    vi.useFakeTimers();
    const presence = new CanvasPresence(() => {}, (err) => { throw err; });
    presence.receive({ type: 'presence', user_id: 'u1', cursor: { name: 'Ada' }, typing: false });
    vi.setSystemTime(Date.now() + HOUR);
    vi.advanceTimersByTime(15_000); // one prune pass
    expect(presence.others().map((p) => p.userId)).toEqual(['u1']);
    vi.advanceTimersByTime(150_000); // not heard from for the stale time: dropped
    expect(presence.others()).toEqual([]);
    presence.close();
  });
});
