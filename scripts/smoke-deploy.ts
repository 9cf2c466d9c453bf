// npx tsx scripts/smoke-deploy.ts --url http://lb.example:8080 --anon-key KEY [--rounds 4] [--round-ms 700]
//
// Checks a deployment from the outside, through its load balancer, the way two users of
// @potentia/client would (docs/self-hosting.md, "Trying it"): both sign up (/auth/v1, an api
// process), one creates a workspace, shares it by email and creates a canvas (HTTP API), both open
// the canvas live (H1 WebSockets: a round-robin balancer puts them on different gateways), then
// each round: a block created by one appears at the other, the other types into it and the first
// sees the text, the second's presence reaches the first; between rounds the second user's canvas
// is closed and opened again (a new socket: the next gateway in the rotation) and catches up.
// Nothing here needs sticky sessions. Exits 1 naming the step that failed.
import { randomUUID } from 'node:crypto';
import { milliseconds, parseCommandLine, wholeNumber } from './lib/command-line.ts';
import WebSocket from 'ws';
import { createPotentiaClient, type Canvas, type PotentiaClient } from '../packages/client/src/index.ts';

const USAGE = 'usage: npx tsx scripts/smoke-deploy.ts --url BASE_URL --anon-key KEY [--rounds N] [--round-ms MS (700)] [--timeout-ms MS]';
const { values, number } = parseCommandLine({
  options: {
    url: { type: 'string' }, 'anon-key': { type: 'string' }, rounds: { type: 'string', default: '4' },
    // a round is one mutation per user: 700 ms keeps both under mutations_per_minute (100)
    'round-ms': { type: 'string', default: '700' },
    'timeout-ms': { type: 'string', default: '10000' },
  },
}, USAGE);
const ROUNDS = number('rounds', wholeNumber(1));
const TIMEOUT = number('timeout-ms', milliseconds(1));
const ROUND_MS = number('round-ms', milliseconds(0));
if (!values.url || !values['anon-key']) {
  console.error(USAGE);
  process.exit(2);
}
const url = values.url.replace(/\/+$/, '');
const anonKey = values['anon-key'];
const t0 = performance.now();
const clients: PotentiaClient[] = [];

const step = (what: string) => console.log(`[${((performance.now() - t0) / 1000).toFixed(1).padStart(5)} s] ${what}`);
/** The step under way, named when it fails (a client error alone can say as little as "{}", supabase-js's message for a 500). */
let doing = 'starting';
const client = () => {
  const c = createPotentiaClient({ url, anonKey, WebSocket, auth: { persistSession: false }, canvas: { reconnectDelayMs: () => 200 } });
  clients.push(c);
  return c;
};

/** Resolves once `check` holds, re-checked on every change of `canvas` (and every 100 ms); fails after TIMEOUT. */
function until(what: string, canvas: Canvas, check: () => boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => { clearInterval(poll); clearTimeout(timer); off(); };
    const test = () => { if (check()) { done(); resolve(); } };
    const off = canvas.subscribe(test);
    const poll = setInterval(test, 100);
    const timer = setTimeout(() => { done(); reject(new Error(`timed out after ${TIMEOUT} ms waiting for ${what}`)); }, TIMEOUT);
    test();
  });
}

async function main() {
  const password = `smoke ${randomUUID()}`;
  const emails = { a: `smoke-a-${randomUUID()}@example.com`, b: `smoke-b-${randomUUID()}@example.com` };
  const a = client();
  const b = client();
  doing = 'signing up two users (POST /auth/v1/signup)';
  await a.auth.signUp(emails.a, password);
  await b.auth.signUp(emails.b, password);
  step(`signed up ${emails.a} and ${emails.b} (/auth/v1)`);
  doing = 'sharing a workspace and a canvas (HTTP API)';
  const { workspace_id } = await a.workspaces.create('smoke');
  await a.workspaces.addMember(workspace_id, emails.b, 'editor');
  const { canvas_id } = await a.canvases.create(workspace_id, 'smoke');
  step(`workspace ${workspace_id} shared with b, canvas ${canvas_id} (HTTP API)`);

  doing = 'opening the canvas for both (H1 through the balancer)';
  const ca = a.canvas(canvas_id);
  await ca.connect();
  let cb = b.canvas(canvas_id);
  await cb.connect();
  step('both canvases live (H1 through the balancer)');

  for (let round = 1; round <= ROUNDS; round++) {
    doing = `round ${round}`;
    const started = performance.now();
    const marker = `round ${round} ${randomUUID().slice(0, 8)}`;
    const block = await ca.create({ type: 'text', content: { text: marker } });
    await until(`b to see block ${block.block_id}`, cb, () => cb.block(block.block_id)?.content['text'] === marker);
    cb.editText(block.block_id, 'text', [marker.length, ' typed by b']);
    await until('a to see b\'s typing', ca, () => ca.text(block.block_id, 'text') === `${marker} typed by b`);
    cb.presence.set({ name: `b round ${round}`, cursor: { x: round, y: round } });
    await until('a to see b\'s presence', ca, () => ca.presence.others().some((p) => p.name === `b round ${round}`));
    step(`round ${round}: block, typing and presence went both ways (canvas_seq ${ca.canvasSeq})`);
    if (round === ROUNDS) break;
    await new Promise((r) => setTimeout(r, Math.max(0, ROUND_MS - (performance.now() - started))));
    // a new socket for b (a closed canvas is replaced by a new one): the balancer sends it wherever it likes
    cb.close();
    cb = b.canvas(canvas_id);
    await cb.connect();
    await until('b to catch up after reconnecting', cb, () => cb.canvasSeq === ca.canvasSeq && cb.blocks().size === ca.blocks().size);
  }
  step(`ok: ${ROUNDS} round(s), ${ca.blocks().size} blocks, canvas_seq ${ca.canvasSeq} on both`);
}

try {
  await main();
} catch (err) {
  const status = (err as { status?: number }).status;
  console.error(`smoke test FAILED while ${doing}: ${(err as Error).message}${status ? ` (HTTP ${status}: the server's log says why)` : ''}`);
  process.exitCode = 1;
} finally {
  for (const c of clients) await c.auth.signOut().catch(() => {});
  setTimeout(() => process.exit(), 500).unref();
}
