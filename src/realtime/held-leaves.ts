import type { ChannelKey } from './channel-key.ts';

/**
 * Durable leaves (api.leave_canvas) a gateway process put off because the user still tracked the
 * canvas on another gateway process when their channel here closed (phoenix-socket.ts
 * leaveCanvas). The last channel of a user to close clears their app.presence row; the cluster's
 * presence view says which one that is, but two closing at once on two processes each see the
 * other's entry still there. So the one put off is kept here, per channel and caller, and run once
 * the view (a remote diff, a node taken for dead) holds no entry of that caller any more: the row is
 * cleared as soon as the user has gone everywhere, not left for the cleanup job's expiry. Dropped
 * when the caller tracks here again (that channel's own close decides then).
 */
export class HeldLeaves {
  private readonly held = new Map<ChannelKey, Map<string, () => Promise<void>>>();

  /** Puts off `leave` of `caller` on `key` (replacing one put off before). */
  hold(key: ChannelKey, caller: string, leave: () => Promise<void>): void {
    let callers = this.held.get(key);
    if (!callers) this.held.set(key, (callers = new Map()));
    callers.set(caller, leave);
  }

  /** Forgets the leave put off for `caller` on `key`, if any. */
  drop(key: ChannelKey, caller: string): void {
    const callers = this.held.get(key);
    if (!callers?.delete(caller)) return;
    if (callers.size === 0) this.held.delete(key);
  }

  /** Runs (and forgets) the leaves put off on `key` whose caller `present` no longer finds. */
  settle(key: ChannelKey, present: (caller: string) => boolean): void {
    const callers = this.held.get(key);
    if (!callers) return;
    for (const [caller, leave] of callers) {
      if (present(caller)) continue;
      callers.delete(caller);
      void leave();
    }
    if (callers.size === 0) this.held.delete(key);
  }
}
