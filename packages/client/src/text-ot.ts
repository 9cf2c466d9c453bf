import { type, type TextOp } from 'ot-text-unicode';

/**
 * The client half of text OT for one content key of one block (ShareDB / ot.js client states),
 * pure and I/O-free: the host (CanvasSync) sends what it is told to send and feeds it the block's
 * deltas in canvas_seq order. The server half is api.upsert_block_atomic (sql/rpc/mutate.sql,
 * "Merge rule"): it transforms an incoming op against every text op applied to the key since its
 * base_version, in commit order, with the incoming op on the 'left', applies it, and broadcasts it
 * as applied (`delta.text[key]`).
 *
 * Ops are ShareDB `text-unicode` ops (npm ot-text-unicode): n skips n code points, "str" inserts,
 * {d: n} deletes n code points. Positions count Unicode code points, not UTF-16 units.
 *
 * States:
 *   synchronized          nothing unacknowledged: text = serverText
 *   awaiting_confirm      one op in flight (sent with base_version = the version it was made on)
 *   awaiting_with_buffer  one op in flight, and the local edits made since, composed into one op
 * so text = serverText + in-flight + buffer, where serverText is the server's text at `version`,
 * the block version of the last delta handled.
 *
 * Acknowledgement is by delta, not by the `ack` frame: the delta carrying the in-flight op's
 * client_op_id is its acknowledgement, because deltas arrive in commit order while an ack may
 * overtake deltas committed before it. Every other delta's op is transformed past the in-flight
 * op and the buffer (ours 'left', as the server places the later-committed insert first) and
 * applied to the local text. After a reconnect the host resends the in-flight op unchanged (same
 * client_op_id, base_version and op): the server transforms it from its base again, or answers a
 * repeat with its original result, and the replayed delta acknowledges it.
 *
 * Lost edits: the server cannot merge a text op on a key that was set as a whole (`content`) since
 * its base, nor one whose base the log no longer holds. Then, and when the block is deleted, an
 * op is rejected, or the history between two states is unknown (a snapshot), the client resets
 * to the server's text and drops its pending edits (in flight and buffer), returning them as a
 * TextLoss (and passing it to `onLost`). A wholesale set is noticed on its delta (the block's text
 * is not the expected serverText) or, if it left the text as it was, by the in-flight op's
 * `conflict` answer.
 */

export type { TextOp };

/** A block as H1 sends it: the text is `content[key]`. */
export type BlockLike = Readonly<Record<string, unknown>>;

/** Where a TextOtClient stands (see the top of this file). */
export type TextOtState = 'synchronized' | 'awaiting_confirm' | 'awaiting_with_buffer';

/**
 * An op to send: `op` on the key's text at block version `baseVersion`, as
 * `{action: 'update', block_id, base_version: baseVersion, patch: {text: {[key]: op}}}` with
 * client_op_id `clientOpId`. Resend exactly this until it is answered.
 */
export type TextSend = { readonly clientOpId: string; readonly baseVersion: number; readonly op: TextOp };

/** The parts of an H1 delta (DeltaMessage) this client reads. */
export type TextDelta = {
  action?: string;
  client_op_id: string | null;
  /** The block's version after the operation. */
  version: number | null;
  block: BlockLike | null;
  /** Text ops by content key, as applied by the server. */
  text?: Record<string, TextOp>;
};

/**
 * Why pending edits were dropped: `conflict` / `rebase_required` (the server's answer to the
 * in-flight op), `rejected` (any other refusal), `overwritten` (a delta set the key as a whole),
 * `deleted` (the block), `resync` (a snapshot replaced the state: what happened between is
 * unknown), `diverged` (a delta's text was not what the ops give: a bug or a foreign writer; the
 * server's text wins).
 */
export type TextLossReason = 'conflict' | 'rebase_required' | 'rejected' | 'overwritten' | 'deleted' | 'resync' | 'diverged';

/** Local edits dropped because the server could not merge them (see TextLossReason). */
export type TextLoss = {
  reason: TextLossReason;
  /** The dropped edits as one op on the server text as it was before the reset (`localText` = that text + op). */
  op: TextOp;
  /** The local text with the dropped edits, as it was just before the reset. */
  localText: string;
  /** The text now: the server's. */
  text: string;
  version: number;
  /**
   * client_op_id of the dropped in-flight op, if any. On `resync`, `rejected` with an unknown
   * outcome, or `overwritten` before its answer, the server may still have applied (or may still
   * apply) it: its delta is then handled as anyone else's, so the text stays the server's.
   */
  clientOpId: string | null;
  /** The server's message, when an answer caused the reset. */
  message?: string;
};

/** What handling one delta or answer did. */
export type TextReceipt = {
  /** The op applied to the local text (a remote edit transformed past the pending local ones): for editors and cursors. */
  op: TextOp | null;
  /** The local text was replaced by the server's (cursors cannot be transformed across it). */
  reset: boolean;
  /** Edits dropped by the reset, if any. */
  lost: TextLoss | null;
  /** Send this now: the buffer became the in-flight op. */
  send: TextSend | null;
};

const NOTHING: TextReceipt = Object.freeze({ op: null, reset: false, lost: null, send: null });

/** The text a block holds under `key`: '' when absent (the server edits an absent key as ''); '' for a non-string (text ops on it are refused). */
export function textIn(block: BlockLike | null | undefined, key: string): string {
  const content = block?.['content'];
  if (!content || typeof content !== 'object') return '';
  const value = (content as Record<string, unknown>)[key];
  return typeof value === 'string' ? value : '';
}

/** A caret position (code points) moved across `op`: inserts before it push it right, deletes around it pull it left. */
export function transformPosition(position: number, op: TextOp): number {
  return type.transformPosition(position, op);
}

/** A caret or [anchor, head] selection moved across `op`. */
export function transformSelection<S extends number | [number, number]>(selection: S, op: TextOp): S {
  return type.transformSelection(selection, op) as S;
}

/** Options of a TextOtClient. */
export type TextOtClientOptions = {
  /** client_op_id for a new in-flight op (default crypto.randomUUID()). */
  newId?: () => string;
  /** Called with every loss, besides its being returned in the receipt. */
  onLost?: (loss: TextLoss) => void;
};

const isNoop = (op: TextOp | null): boolean => !op || type.normalize(op).length === 0;

/**
 * The OT client state of one text (one content key of one block): applyLocal() for local edits,
 * receive() for the block's deltas in canvas_seq order, fail() for a refusal of the in-flight op,
 * resync() after a snapshot. Pure: the host sends what it is told to (see the top of this file).
 */
export class TextOtClient {
  private _serverText: string;
  private _text: string;
  private _version: number;
  /** The in-flight op as sent (what a resend repeats). */
  private sent: TextSend | null = null;
  /** The in-flight op transformed past every delta since it was made: on serverText it gives the local text minus the buffer. */
  private inflightOp: TextOp | null = null;
  private buffer: TextOp | null = null;
  private _deleted = false;

  /** `text` is the key's text at block version `version` (textIn(block, key), block.version). */
  constructor(text: string, version: number, private readonly opts: TextOtClientOptions = {}) {
    this._serverText = text;
    this._text = text;
    this._version = version;
  }

  /** The local text: the server's with every pending local edit. */
  get text(): string { return this._text; }
  /** The server's text at `version`. */
  get serverText(): string { return this._serverText; }
  /** The block version of the last delta (or answer) taken in. */
  get version(): number { return this._version; }
  /** The block was deleted: the client takes no more edits. */
  get deleted(): boolean { return this._deleted; }
  get state(): TextOtState {
    return !this.sent ? 'synchronized' : this.buffer ? 'awaiting_with_buffer' : 'awaiting_confirm';
  }
  /** The in-flight op as sent (resend it unchanged until answered), or null. */
  get inflight(): TextSend | null { return this.sent; }
  /** Every unacknowledged local edit as one op on serverText, or null when synchronized. */
  get pending(): TextOp | null {
    if (!this.inflightOp) return null;
    return this.buffer ? type.compose(this.inflightOp, this.buffer) : this.inflightOp;
  }

  /**
   * A local edit on the local text. Throws (changing nothing) when the op does not fit the text
   * or the block was deleted. Returns the op to send now if nothing was in flight (it becomes the
   * in-flight op, based on `version`); else the edit joins the buffer and null is returned. A
   * no-op changes nothing.
   */
  applyLocal(op: TextOp): TextSend | null {
    if (this._deleted) throw new Error('the block was deleted');
    const normalized = type.normalize(op); // drops empty components (a 0 skip, an empty insert)
    const text = type.apply(this._text, normalized); // throws on an op that does not fit
    if (normalized.length === 0) return null;
    this._text = text;
    if (!this.sent) return this.startSend(normalized);
    this.buffer = this.buffer ? type.compose(this.buffer, normalized) : normalized;
    return null;
  }

  /**
   * The next delta of this block (in canvas_seq order; a delete, of it or of an ancestor).
   * Deltas at or below `version` are already in the state (after a reset to a newer block) and
   * change nothing.
   */
  receive(delta: TextDelta, key: string): TextReceipt {
    if (this._deleted) return NOTHING;
    if (delta.action === 'delete') return this.markDeleted();
    const version = delta.version;
    if (typeof version !== 'number' || version <= this._version) return NOTHING;
    const actual = textIn(delta.block, key);
    const applied = delta.text?.[key];

    if (this.sent && delta.client_op_id === this.sent.clientOpId) {
      // our op, as the server applied it (transformed exactly as we transformed inflightOp)
      let serverText: string;
      try {
        serverText = type.apply(this._serverText, applied ?? this.inflightOp!);
      } catch {
        return this.reset('diverged', actual, version);
      }
      if (serverText !== actual) return this.reset('diverged', actual, version);
      this._serverText = serverText;
      this._version = version;
      this.sent = null;
      this.inflightOp = null;
      const buffer = this.buffer;
      this.buffer = null;
      // a buffer that cancelled out (typed and erased) need not be sent
      if (buffer && !isNoop(buffer)) return { ...NOTHING, send: this.startSend(buffer) };
      // synchronized: the local text must be the server's (were it not, a bug: the server's wins)
      return this._text === this._serverText ? NOTHING : this.reset('diverged', this._serverText, version);
    }

    if (!applied) {
      this._version = version;
      // the key was set as a whole (or removed): pending ops on the old text cannot be merged
      return actual === this._serverText ? NOTHING : this.reset('overwritten', actual, version);
    }
    let remote = applied;
    let inflightOp = this.inflightOp;
    let buffer = this.buffer;
    let text: string;
    let serverText: string;
    try {
      if (inflightOp) {
        const mine = type.transform(inflightOp, remote, 'left');
        remote = type.transform(remote, inflightOp, 'right');
        inflightOp = mine;
      }
      if (buffer) {
        const mine = type.transform(buffer, remote, 'left');
        remote = type.transform(remote, buffer, 'right');
        buffer = mine;
      }
      serverText = type.apply(this._serverText, applied);
      text = type.apply(this._text, remote);
    } catch {
      return this.reset('diverged', actual, version);
    }
    if (serverText !== actual) return this.reset('diverged', actual, version);
    this._serverText = serverText;
    this._text = text;
    this._version = version;
    this.inflightOp = inflightOp;
    this.buffer = buffer;
    return { ...NOTHING, op: remote };
  }

  /**
   * The server's refusal of an op: `conflict` / `rebase_required` (with the current block and
   * version as the answer carries them) or `rejected`. Returns null when `clientOpId` is not the
   * in-flight op (an answer to an op already dropped). Otherwise resets to the newer of the
   * answer's block and the state already known (deltas up to the answer's version are then
   * skipped), dropping every pending edit.
   */
  fail(clientOpId: string, answer: {
    reason: 'conflict' | 'rebase_required' | 'rejected';
    block?: BlockLike | null;
    version?: number | null;
    message?: string;
  }, key: string): TextReceipt | null {
    if (!this.sent || this.sent.clientOpId !== clientOpId || this._deleted) return null;
    const blockVersion = answer.block?.['version'];
    const version = typeof blockVersion === 'number' ? blockVersion : answer.version;
    if (answer.block && typeof version === 'number' && version > this._version) {
      return this.reset(answer.reason, textIn(answer.block, key), version, answer.message);
    }
    return this.reset(answer.reason, this._serverText, this._version, answer.message);
  }

  /**
   * The block as a snapshot shows it (null: it is gone). The same version changes nothing; a
   * newer one replaces the state, dropping pending edits (the ops between are unknown).
   */
  resync(block: (BlockLike & { version: number }) | null, key: string): TextReceipt {
    if (this._deleted) return NOTHING;
    if (!block) return this.markDeleted();
    if (block.version < this._version) return NOTHING;
    const actual = textIn(block, key);
    if (block.version === this._version) return actual === this._serverText ? NOTHING : this.reset('diverged', actual, block.version);
    return this.reset('resync', actual, block.version);
  }

  private startSend(op: TextOp): TextSend {
    const id = this.opts.newId ? this.opts.newId() : globalThis.crypto.randomUUID();
    this.sent = { clientOpId: id, baseVersion: this._version, op };
    this.inflightOp = op;
    return this.sent;
  }

  private markDeleted(): TextReceipt {
    const receipt = this.reset('deleted', '', this._version);
    this._deleted = true;
    return receipt;
  }

  /** The server's text wins: pending edits are dropped and reported. */
  private reset(reason: TextLossReason, text: string, version: number, message?: string): TextReceipt {
    const pending = this.pending;
    const localText = this._text;
    const clientOpId = this.sent?.clientOpId ?? null;
    const changed = localText !== text;
    this._serverText = text;
    this._text = text;
    this._version = version;
    this.sent = null;
    this.inflightOp = null;
    this.buffer = null;
    if (!pending || isNoop(pending)) return changed ? { ...NOTHING, reset: true } : NOTHING;
    const lost: TextLoss = { reason, op: pending, localText, text, version, clientOpId, ...(message !== undefined ? { message } : {}) };
    this.opts.onLost?.(lost);
    return { ...NOTHING, reset: true, lost };
  }
}
