import { formatLsn } from './replication.ts';

/**
 * What a cluster node (cluster.ts) missed of the others' client broadcasts while its replication
 * stream was lost, and who still owes it them — bookkeeping only, no I/O.
 *
 * A gap is a stretch of WAL that no stream of this node carried: the cluster messages whose
 * record ends after `from` (the end of the last one the lost stream delivered, or where the node
 * began listening) and at or before `to` (the new stream's start, its slot's consistent point).
 * The WAL is one order for every node, so the gap names what was missed whoever sent it: a node
 * this node had never heard of when its stream was lost (one started meanwhile, one whose
 * messages had not come by yet, one it had taken for dead) owes it as much as a known one. Before,
 * each node asked the others for their broadcasts after the last number it had heard of each: a
 * node it had not heard of was asked nothing, and all it sent meanwhile was lost
 * (tests/integration/realtime-cluster-kills.test.ts: all of a gateway's acknowledged REST
 * broadcasts, when it started while another's stream was down).
 *
 * Exact at both ends: a broadcast the lost stream delivered ends at or before `from`, one the new
 * stream delivers ends after `to`, so a broadcast sent again for the gap (it carries its original
 * LSN) is one this node never had; `seen` only keeps one that is sent again twice (asked again
 * before the answer was confirmed) from being delivered twice.
 *
 * Every node heard owes every gap opened since, until its heartbeat says it answered the last
 * request for them (`answered`); a node heard for the first time (or again after it was taken for
 * dead) owes every live gap (`heard`). Each is asked alone (`due`: at once, then again every
 * `askEveryMs` until it answered: a request is lost when the other node's stream is down too). A
 * new loss asks again, under a new request, for the gaps a node had not answered yet: its answer
 * may have been lost with the stream. A gap is live for `maxAgeMs` (twice what a node keeps of
 * its broadcasts, after which none can be sent again).
 */
export type Gap = { from: bigint; to: bigint; at: number; seen: Set<string>;
  /** node id → the number of the last message of it this node had read when the gap opened (cluster.ts) */
  read: Map<string, bigint> };

type Owed = { req: number; gaps: Gap[]; askedAt: number };

export type GapRequest = { node: string; req: number; lost: [string, string][] };

export class ClusterGaps {
  private gaps: Gap[] = [];
  /** node id → the request it has to answer and the gaps that request named */
  private owed = new Map<string, Owed>();
  private requests = 0;

  constructor(private readonly maxAgeMs: number, private readonly askEveryMs: number) {}

  /** Whether `gap` may still be asked for and sent again (younger than maxAgeMs). */
  liveGap(gap: Gap, now: number): boolean {
    return now - gap.at <= this.maxAgeMs;
  }

  /**
   * The stream was lost from `from` to `to`: every node in `nodes`, and every one that owes an
   * older gap, owes this one too, under a new request asked at once (due), the older gaps it had
   * not answered with it (their answers may have been lost with the stream).
   */
  open(from: bigint, to: bigint, nodes: Iterable<string>, now: number, read: ReadonlyMap<string, bigint> = new Map()): void {
    this.prune(now);
    if (to <= from) return;
    const gap: Gap = { from, to, at: now, seen: new Set(), read: new Map(read) };
    this.gaps.push(gap);
    for (const node of new Set([...nodes, ...this.owed.keys()])) {
      this.owed.set(node, { req: ++this.requests, gaps: [...(this.owed.get(node)?.gaps ?? []), gap], askedAt: 0 });
    }
  }

  /** A node heard for the first time (or again after it was dropped): it owes every live gap. */
  heard(node: string, now: number): void {
    this.prune(now);
    if (this.gaps.length > 0) this.owed.set(node, { req: ++this.requests, gaps: [...this.gaps], askedAt: 0 });
  }

  /** `node`'s heartbeat says it sent again all that its request `req` asked for. */
  answered(node: string, req: number): boolean {
    if (this.owed.get(node)?.req !== req) return false;
    this.owed.delete(node);
    return true;
  }

  /** A node gone (left, or dead): it answers nothing (heard again, it owes every live gap). */
  drop(node: string): void {
    this.owed.delete(node);
  }

  /** The requests to send (again) now: each node that owes gaps and was not asked in the last askEveryMs. */
  due(now: number): GapRequest[] {
    this.prune(now);
    const out: GapRequest[] = [];
    for (const [node, o] of this.owed) {
      if (now - o.askedAt < this.askEveryMs) continue;
      o.askedAt = now;
      out.push({ node, req: o.req, lost: o.gaps.map(wire) });
    }
    return out;
  }

  /**
   * A broadcast of `node` numbered `seq`, first sent at `lsn` in its message numbered `msg`, sent
   * again to this node: true to deliver it (once). Not when this node had read that message, or a
   * later one of the node, before the gap: the node's statement was run again after its answer was
   * lost, the first copy landed before the gap (read) and the second in it (the one the node heard
   * of, so the one it logged). Exact: the node's later messages go out after the second copy.
   */
  admitResent(node: string, seq: number, lsn: bigint, now: number, msg?: bigint): boolean {
    const o = this.owed.get(node);
    const gap = o?.gaps.find((g) => this.liveGap(g, now) && lsn > g.from && lsn <= g.to);
    if (!gap) return false;
    const read = gap.read.get(node);
    if (msg !== undefined && read !== undefined && msg <= read) return false;
    const key = `${node}:${seq}`;
    if (gap.seen.has(key)) return false;
    gap.seen.add(key);
    return true;
  }

  /** Live gaps and the nodes owing some (for a log's eyes). */
  state(): { gaps: [string, string][]; owing: number } {
    return { gaps: this.gaps.map(wire), owing: this.owed.size };
  }

  private prune(now: number): void {
    if (this.gaps.every((g) => this.liveGap(g, now))) return;
    this.gaps = this.gaps.filter((g) => this.liveGap(g, now));
    for (const [node, o] of this.owed) {
      o.gaps = o.gaps.filter((g) => this.liveGap(g, now));
      if (o.gaps.length === 0) this.owed.delete(node);
    }
  }
}

const wire = (g: Gap): [string, string] => [formatLsn(g.from), formatLsn(g.to)];
