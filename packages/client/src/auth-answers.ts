import { requestUrl } from './deadline.ts';
import { isObject } from './json-value.ts';

/**
 * The fetch supabase-js is given, so that a failed sign-in says what failed. auth-js makes the
 * message of an error answer from its JSON body (`msg`, `message`, …), except when it cannot:
 *  - a 5xx (the auth server failing, its database unreachable, a proxy's 502): auth-js reads no
 *    body and takes the message from the Response object itself, which JSON.stringify makes `{}`;
 *  - a body that is not JSON (a proxy's HTML page for 413 or 404): auth-js throws the parse error,
 *    with no status, which reads as a network failure.
 * Under `/auth/v1/` only, such an answer is described here, as `HTTP <status> <status text>` plus
 * the body's message and code when it has them: a 5xx Response gets it as its `message` (what
 * auth-js reads), a non-JSON error body is replaced by GoTrue's error shape `{code, msg}` with the
 * same status and headers. A session answer gets an expires_at in this host's clock
 * (withLocalExpiry), a JSON refusal with a `hint` gets it into its message (withHint). Nothing
 * else is touched: other successes, other JSON 4xx answers and every other path go through as they came.
 */
export function withAuthAnswers(base: typeof fetch, authPrefix: string): typeof fetch {
  return async (input, init) => {
    let res: Response;
    try {
      res = await base(input, init);
    } catch (err) {
      throw requestUrl(input).startsWith(authPrefix) ? unreachable(authPrefix, err) : err;
    }
    if (!requestUrl(input).startsWith(authPrefix)) return res;
    if (res.ok) return withLocalExpiry(res);
    const text = await res.clone().text().catch(() => '');
    const body = parseObject(text);
    const message = describe(res, body);
    if (res.status >= 500) {
      Object.defineProperty(res, 'message', { value: message });
      return res;
    }
    if (body) return withHint(res, body);
    const headers = new Headers(res.headers);
    headers.set('content-type', 'application/json');
    headers.delete('content-length');
    return new Response(JSON.stringify({ code: res.status, msg: message }), { status: res.status, statusText: res.statusText, headers });
  };
}

/**
 * A JSON refusal whose body carries a `hint` (what to do next: `{"message": "Invalid API key",
 * "hint": "Double check your anon or service_role API key …"}`, as Supabase's gateway and the local
 * `/auth/v1` answer a wrong or missing `apikey`), with the hint appended to the message auth-js
 * reads (`msg`, else `message`, …): auth-js keeps only that message, so the hint was lost and the
 * caller got a bare "Invalid API key". Any other answer goes through as it came.
 */
function withHint(res: Response, body: Record<string, unknown>): Response {
  const hint = firstString(body, ['hint']);
  const key = ['msg', 'message', 'error_description', 'error'].find((k) => typeof body[k] === 'string');
  if (!hint || !key || (body[key] as string).includes(hint)) return res;
  const headers = new Headers(res.headers);
  headers.delete('content-length');
  headers.delete('content-encoding');
  return new Response(JSON.stringify({ ...body, [key]: `${body[key] as string}: ${hint}` }), { status: res.status, statusText: res.statusText, headers });
}

/**
 * A request under `/auth/v1/` that got no answer at all (nothing listens there, DNS, a reset), as
 * an error whose message says where the client went and why it failed: auth-js keeps only the
 * message (its AuthRetryableFetchError, status 0, which the client reports as code `network`),
 * and fetch's own is a bare "fetch failed", its reason (`connect ECONNREFUSED …`) in `cause`.
 * An abort is passed on as it came.
 */
function unreachable(authPrefix: string, err: unknown): unknown {
  if (err instanceof Error && err.name === 'AbortError') return err;
  const cause = err instanceof Error && err.cause instanceof Error ? err.cause.message : '';
  const what = [err instanceof Error ? err.message : String(err), cause].filter(Boolean).join(': ');
  return new Error(`the auth server at ${authPrefix.replace(/\/+$/, '')} could not be reached (${what}): is the server running, and is this its URL?`, { cause: err });
}

/**
 * A session answer (sign-in, sign-up, refresh: `access_token`, `expires_in`, `expires_at`) with
 * `expires_at` made from `expires_in` and this host's clock, as auth-js itself does when the
 * server sends none. auth-js compares expires_at with Date.now() to decide when to refresh; the
 * server's expires_at is its own clock's, so on a client whose clock is ahead of the server's by
 * more than the token's life every token looked expired on arrival and was refreshed again at
 * every getSession() (each HTTP call, each reconnect) and every 30 s tick; one behind it looked
 * fresh until long after the server had ended it. `expires_in` is a duration, the same on both
 * hosts. Any other answer goes through as it came.
 */
async function withLocalExpiry(res: Response): Promise<Response> {
  const body = parseObject(await res.clone().text().catch(() => ''));
  const session = body && typeof body['access_token'] === 'string' ? body : isObject(body?.['session']) ? body['session'] : null;
  const expiresIn = session?.['expires_in'];
  if (!body || !session || typeof expiresIn !== 'number' || !Number.isFinite(expiresIn)) return res;
  session['expires_at'] = Math.floor(Date.now() / 1000) + expiresIn;
  const headers = new Headers(res.headers);
  headers.delete('content-length');
  headers.delete('content-encoding');
  return new Response(JSON.stringify(body), { status: res.status, statusText: res.statusText, headers });
}


function parseObject(text: string): Record<string, unknown> | null {
  try {
    const value: unknown = JSON.parse(text);
    return isObject(value) ? value : null;
  } catch {
    return null;
  }
}

const firstString = (body: Record<string, unknown> | null, keys: string[]): string | undefined => {
  for (const key of keys) if (typeof body?.[key] === 'string' && body[key] !== '') return body[key] as string;
  return undefined;
};

/** `HTTP 503 Service Unavailable: <the body's message> (<its code>)`, with what the answer has of it. */
function describe(res: Response, body: Record<string, unknown> | null): string {
  const head = `HTTP ${res.status}${res.statusText ? ` ${res.statusText}` : ''}`;
  const message = firstString(body, ['msg', 'message', 'error_description', 'error']);
  const code = firstString(body, ['error_code', 'code']);
  return `${head}${message ? `: ${message}` : ''}${code ? ` (${code})` : ''}`;
}
