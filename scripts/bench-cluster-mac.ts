// npm run bench:cluster-mac -- [--rounds 5] [--ms 300]
//
// What the realtime cluster's MAC (src/realtime/cluster.ts, "Authentication") costs per message,
// on the CPU of one gateway: what a sending node does (encodeFrame, encodeMessage) plus what each
// receiving node does (verifyMessage, decodeMessage), with the MAC and without it (the same
// bytes with the MAC left blank: no HMAC computed, none checked), in alternating rounds of one
// run. No database: the statement that emits a message and the
// walsender that decodes it cost far more than either, and are the same with or without.
//
// Cases: one broadcast of a ~100-byte JSON payload (a cursor) alone in its message; a batch of 32
// such broadcasts in one message (a busy node's statement); one 64 KiB broadcast. Prints, per
// case, the median over rounds of ns per message for each, and their ratio.
import { decodeMessage, encodeFrame, encodeMessage, verifyMessage } from '../src/realtime/cluster.ts';
import { deriveClusterKey } from '../src/realtime/cluster-key.ts';
import { parseCommandLine, wholeNumber } from './lib/command-line.ts';

const args = parseCommandLine({ options: { rounds: { type: 'string', default: '5' }, ms: { type: 'string', default: '300' } } });
const rounds = args.number('rounds', wholeNumber(1));
const ms = args.number('ms', wholeNumber(1));
const key = deriveClusterKey('bench-secret-bench-secret-bench-secret');
const node = '6c1d5f53-0b8e-4a52-9d40-6a1f2d7c9e11';

const broadcast = (bytes: number, i: number) => encodeFrame(
  { type: 'broadcast', node, key: 'private:canvas:3f0c8a8e-1b7e-4c55-a1f4-0f5e2b9d7c31', event: 'cursor', encoding: 'json', seq: i },
  Buffer.from(JSON.stringify({ x: 123.5, y: 456.25, user: node, pad: 'x'.repeat(Math.max(0, bytes - 80)) })));
type Case = { name: string; frames: () => Buffer[] };
const cases: Case[] = [
  { name: '1 broadcast, ~100 B payload', frames: () => [broadcast(100, 1)] },
  { name: '32 broadcasts of ~100 B in one message', frames: () => Array.from({ length: 32 }, (_, i) => broadcast(100, i)) },
  { name: '1 broadcast, 64 KiB payload', frames: () => [broadcast(64 * 1024, 1)] },
];

/** The sender's and a receiver's work for one message: with the MAC (signed, verified) or without. */
function once(c: Case, mac: boolean): number {
  const frames = c.frames();
  // without: the same bytes with the MAC left blank (encodeMessage's copy, no HMAC), read unverified
  const content = mac ? encodeMessage(frames, key, node, 1n)
    : Buffer.concat([Buffer.from([4]), Buffer.alloc(32), Buffer.from(node.replace(/-/g, ''), 'hex'), Buffer.alloc(16), ...frames]);
  if (mac && verifyMessage(content, [key])) throw new Error('MAC refused');
  return decodeMessage(content).length;
}

/** ns per message over `ms` of repeated work. */
function measure(c: Case, mac: boolean): number {
  let n = 0;
  let sink = 0;
  const start = process.hrtime.bigint();
  const end = start + BigInt(ms) * 1_000_000n;
  let now = start;
  while (now < end) {
    for (let i = 0; i < 50; i++) sink += once(c, mac);
    n += 50;
    now = process.hrtime.bigint();
  }
  if (sink < 0) console.log(sink);
  return Number(now - start) / n;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
for (const c of cases) {
  for (let i = 0; i < 3; i++) { once(c, true); once(c, false); }
  measure(c, false); measure(c, true); // warm-up
  const without: number[] = [];
  const withMac: number[] = [];
  for (let r = 0; r < rounds; r++) {
    without.push(measure(c, false));
    withMac.push(measure(c, true));
  }
  const a = median(without);
  const b = median(withMac);
  console.log(`${c.name}: without MAC ${a.toFixed(0)} ns/message, with ${b.toFixed(0)} ns/message, ratio ${(b / a).toFixed(2)} (+${(b - a).toFixed(0)} ns)`);
}
