// The ceiling of any Node HTTP layer for H2 on this machine (scripts/bench-http.ts): a bare
// node:http server that does only what no HTTP layer can skip, and exactly the SQL the real
// handler sends. Per request: read the body, JSON.parse it, send it down the canvas's lane as callMutation does
// (sendMutation: the H2 endpoint limit, then upsert_block_atomic's status and JSON text, prepared
// statements), and answer that text. No Hono, no zod, no JWT check (the bearer token is
// looked up in a map of the tokens the bench signed), no request id of its own (the client's is echoed),
// logging, metrics or trace.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { CanvasLanes } from '../../src/db/canvas-lanes.ts';
import { sendMutation } from '../../src/http/rpc.ts';

export type BareServer = { url: string; close(): Promise<void> };

/** Serves POST /api/v1/canvas/{id}/mutate (one op) for the users `tokens` maps (token → user id). */
export async function startBareServer(lanes: CanvasLanes, tokens: Map<string, string>, development: boolean): Promise<BareServer> {
  const answer = (res: ServerResponse, status: number, text: string) => {
    // X-Request-Id echoed, as the real server does: the load generator matches answers to blocks by it
    const id = res.req.headers['x-request-id'];
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(text), ...(id === undefined ? {} : { 'X-Request-Id': id }) });
    res.end(text);
  };
  const mutate = async (req: IncomingMessage, res: ServerResponse, body: Buffer) => {
    const path = req.url ?? '';
    const userId = tokens.get((req.headers.authorization ?? '').slice('Bearer '.length));
    if (!userId) return answer(res, 401, '{"error":{"code":"unauthorized","message":"unknown token"}}');
    const op = JSON.parse(body.toString('utf8'));
    const canvasId = path.split('/')[4] ?? ''; // /api/v1/canvas/{id}/mutate
    const row = await sendMutation(lanes, {
      claims: { sub: userId, role: 'authenticated' },
      // as callMutation (src/http/rpc.ts): the headers the audit row records
      headers: { 'x-forwarded-for': req.socket.remoteAddress ?? '', 'user-agent': req.headers['user-agent'] ?? '',
                 'x-request-id': String(req.headers['x-request-id'] ?? '') },
      method: 'POST',
      path,
    }, 'upsert_block_atomic', [canvasId, op.block_id ?? null, op.action, op.client_op_id, op.base_version ?? null, op.patch ?? {}],
    { endpoint: 'H2', relaxed: development });
    if (row?.status === 'success') return answer(res, 200, row.result);
    // a conflict (not expected in the bench, counted as an error): its current block, for the load generator to catch up from
    const result = JSON.parse(row?.result ?? '{}');
    answer(res, 409, JSON.stringify({ error: { ...result.error, block: result.block } }));
  };
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (chunk: Buffer) => chunks.push(chunk));
    req.on('end', () => {
      mutate(req, res, chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks))
        .catch((err: Error) => answer(res, 500, JSON.stringify({ error: { code: 'internal', message: err.message } })));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () => new Promise<void>((resolve) => { server.closeAllConnections(); server.close(() => resolve()); }),
  };
}
