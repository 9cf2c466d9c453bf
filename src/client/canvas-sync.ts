import type { AckMessage, Block, ConflictMessage, DeltaMessage, RejectedMessage, ServerMessage } from '../realtime/h1-protocol.ts';

/**
 * A typed client for H1 (`/ws/canvas/{id}`): joins a canvas (snapshot, then resume, then live),
 * applies deltas in server_seq order (each exactly once), and after a reconnect resumes from the
 * last applied seq and resends every unacknowledged mutation with the same client_op_id (the
 * server applies an op at most once per client_op_id).
 *
 * Runtime-neutral: pass any WHATWG-style WebSocket constructor (browser, Deno, Node 22, or `ws`).
 */
export type WebSocketLike = {
  readyState: number;
  send(data: string): void;
  close(): void;
  onopen: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onmessage: ((ev: { data: any }) => void) | null;
  onerror: ((ev: any) => void) | null;
};
export type WebSocketConstructor = new (url: string) => WebSocketLike;

export type Mutation = {
  action: 'create' | 'update' | 'move' | 'delete';
  block_id?: string | null;
  base_version?: number | null;
  patch?: Record<string, unknown>;
};

export type MutationOutcome = AckMessage | ConflictMessage | RejectedMessage;

export type CanvasSyncOptions = {
  /** http(s):// or ws(s):// base of the Potentia server. */
  url: string;
  canvasId: string;
  /** Current access token (called on every (re)connect). */
  token: () => string | Promise<string>;
  WebSocket: WebSocketConstructor;
  reconnectDelayMs?: (attempt: number) => number;
  onChange?: (blocks: ReadonlyMap<string, Block>, delta: DeltaMessage | null) => void;
};

type Pending = { id: string; op: Mutation; resolve: (o: MutationOutcome) => void; sent: boolean };

export class CanvasSync {
  readonly blocks = new Map<string, Block>();
  /** Highest server_seq applied. */
  seq = 0;
  private hasSnapshot = false;
  private ws: WebSocketLike | null = null;
  private live = false;
  private closed = false;
  private attempt = 0;
  private readonly pending = new Map<string, Pending>();
  private readonly readyWaiters: Array<() => void> = [];

  constructor(private readonly opts: CanvasSyncOptions) {}

  /** Connects and resolves once the state is caught up (snapshot + replay) and live. */
  async join(): Promise<void> {
    await this.connect();
    await this.ready();
  }

  ready(): Promise<void> {
    return this.live ? Promise.resolve() : new Promise((r) => this.readyWaiters.push(r));
  }

  /** Sends a mutation; resolves with its ack, conflict or rejection (resent after reconnects). */
  mutate(op: Mutation, clientOpId: string = globalThis.crypto.randomUUID()): Promise<MutationOutcome> {
    return new Promise((resolve) => {
      const p: Pending = { id: clientOpId, op, resolve, sent: false };
      this.pending.set(clientOpId, p);
      this.flush();
    });
  }

  close(): void {
    this.closed = true;
    this.ws?.close();
  }

  /** Drops the connection as a network failure would (tests, or a suspected dead socket). */
  drop(): void {
    this.ws?.close();
  }

  private async connect(): Promise<void> {
    const base = this.opts.url.replace(/^http/, 'ws').replace(/\/+$/, '');
    const token = await this.opts.token();
    const query = this.hasSnapshot ? `&since_seq=${this.seq}` : '';
    const ws = new this.opts.WebSocket(`${base}/ws/canvas/${this.opts.canvasId}?access_token=${encodeURIComponent(token)}${query}`);
    this.ws = ws;
    this.live = false;
    await new Promise<void>((resolve, reject) => {
      ws.onopen = () => {
        this.attempt = 0;
        if (!this.hasSnapshot) ws.send(JSON.stringify({ type: 'resume', since_seq: 0, snapshot: true }));
        resolve();
      };
      ws.onerror = (e) => reject(e instanceof Error ? e : new Error('WebSocket error'));
      ws.onmessage = (ev) => this.onMessage(JSON.parse(String(ev.data)) as ServerMessage);
      ws.onclose = () => {
        if (this.ws !== ws) return;
        this.live = false;
        for (const p of this.pending.values()) p.sent = false; // resend after reconnect
        if (!this.closed) this.scheduleReconnect();
      };
    });
  }

  private scheduleReconnect(): void {
    const delay = (this.opts.reconnectDelayMs ?? ((n) => Math.min(5000, 100 * 2 ** n)))(this.attempt++);
    setTimeout(() => {
      if (!this.closed) this.connect().catch(() => this.scheduleReconnect());
    }, delay);
  }

  private flush(): void {
    if (!this.live || !this.ws) return;
    for (const p of this.pending.values()) {
      if (p.sent) continue;
      p.sent = true;
      this.ws.send(JSON.stringify({ type: 'mutate', client_op_id: p.id, ...p.op, patch: p.op.patch ?? {} }));
    }
  }

  private onMessage(m: ServerMessage): void {
    switch (m.type) {
      case 'snapshot':
        this.blocks.clear();
        for (const b of m.blocks) this.blocks.set(b.block_id, b);
        this.seq = m.watermark;
        this.hasSnapshot = true;
        this.opts.onChange?.(this.blocks, null);
        return;
      case 'delta':
        if (m.server_seq <= this.seq) return; // already applied
        this.seq = m.server_seq;
        if (m.action === 'delete') for (const id of [m.block_id, ...(m.deleted_ids ?? [])]) this.blocks.delete(id);
        else if (m.block) this.blocks.set(m.block_id, m.block);
        this.opts.onChange?.(this.blocks, m);
        return;
      case 'resumed':
        this.live = true;
        this.readyWaiters.splice(0).forEach((r) => r());
        this.flush();
        return;
      case 'ack':
      case 'conflict':
      case 'rejected': {
        const p = this.pending.get(m.client_op_id);
        if (!p) return;
        this.pending.delete(m.client_op_id);
        p.resolve(m);
        return;
      }
      case 'error':
        if (m.client_op_id && (m.code === 'rate_limited' || m.code === 'internal')) {
          const p = this.pending.get(m.client_op_id);
          if (p) {
            p.sent = false;
            setTimeout(() => this.flush(), m.retry_after_ms ?? 200);
          }
        } else if (m.client_op_id && m.code === 'read_only') {
          const p = this.pending.get(m.client_op_id);
          if (p) {
            this.pending.delete(m.client_op_id);
            p.resolve({ type: 'rejected', client_op_id: m.client_op_id, error: { code: 'forbidden', message: m.message } });
          }
        }
        return;
      default:
        return;
    }
  }
}
