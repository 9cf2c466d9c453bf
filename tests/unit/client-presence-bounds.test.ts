import { describe, expect, it } from 'vitest';
import { CanvasPresence } from '../../packages/client/src/presence.ts';

/** presence.ts's PRESENCE_MAX_PEERS. */
const PRESENCE_MAX_PEERS = 10_000;

// canvas.presence (packages/client/src/presence.ts) against presence frames no real server sends:
// the server keeps each presence under 1 KB (a name of at most 100 characters) and a canvas's
// people are its members, but a broken or hostile one may send a name of megabytes or a new
// user id in every frame. What the client keeps of others must stay bounded.

const frame = (userId: string, cursor: Record<string, unknown>) => ({ type: 'presence' as const, user_id: userId, cursor, typing: false });

describe('CanvasPresence bounds what it keeps of others', () => {
  it(`keeps at most ${PRESENCE_MAX_PEERS} others, dropping the one heard from longest ago`, () => {
    const presence = new CanvasPresence(() => {}, (err) => { throw err; });
    const extra = 50;
    for (let i = 0; i < PRESENCE_MAX_PEERS + extra; i++) {
      presence.receive(frame(`u${i}`, { name: `n${i}` }));
      if (i === PRESENCE_MAX_PEERS - 1) presence.receive(frame('u0', { name: 'n0 again' })); // u0 heard again: kept
    }
    const ids = presence.others().map((p) => p.userId);
    expect(ids).toHaveLength(PRESENCE_MAX_PEERS);
    expect(ids).toContain('u0');
    expect(ids).not.toContain('u1');
    expect(ids).toContain(`u${PRESENCE_MAX_PEERS + extra - 1}`);
    presence.close();
  });

  it('drops a name, a color or a selection key longer than any the server lets through', () => {
    const presence = new CanvasPresence(() => {}, (err) => { throw err; });
    const huge = 'x'.repeat(1_000_000);
    presence.receive(frame('u1', { name: huge, color: huge, selection: { blockId: huge, key: huge, start: 0, end: 1 }, cursor: { x: 1, y: 2 } }));
    const [peer] = presence.others();
    expect(peer).toMatchObject({ userId: 'u1', cursor: { x: 1, y: 2 }, selection: null });
    expect(peer!.name).toBeUndefined();
    expect(peer!.color).toBeUndefined();
    presence.receive(frame('u1', { name: 'Ada', color: '#e33' }));
    expect(presence.others()[0]).toMatchObject({ name: 'Ada', color: '#e33' });
    presence.close();
  });
});
