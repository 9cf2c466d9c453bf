import { expect } from 'vitest';
import { buildApiDocument } from '../../src/http/build-document.ts';
import { createResponseChecker } from '../../src/http/response-contract.ts';

/**
 * Real responses checked against the OpenAPI document (the one the server serves, built
 * in-process): the status must be documented for the operation answering `method path`, and the
 * body must match that status's schema. The same check the server applies to every response when
 * VALIDATE_RESPONSES is on (src/http/response-contract.ts); here a test asserts it explicitly.
 */
let checker: ReturnType<typeof createResponseChecker> | undefined;
export const contract = () => (checker ??= createResponseChecker(buildApiDocument()));

export type CheckedResponse = { status: number; headers: Headers; text: string; body: any };

/** Fails the test unless the response matches the document, and unless `method path` is a documented operation. */
export function expectContract(method: string, path: string, res: { status: number; headers: Headers; text: string }) {
  const { checkResponse, operationFor } = contract();
  expect(operationFor(method, path.split('?')[0]!), `${method} ${path} is a documented operation`).toBeDefined();
  const violation = checkResponse({ method, path: path.split('?')[0]!, status: res.status, contentType: res.headers.get('content-type'), body: res.text });
  expect(violation, `${method} ${path} → ${res.status} ${res.text.slice(0, 300)}`).toBeNull();
}

/** fetch, then expectContract; the body parsed when it is JSON. */
export async function checkedFetch(baseUrl: string, method: string, path: string,
  opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {}): Promise<CheckedResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.token) headers.authorization = `Bearer ${opts.token}`;
  if (opts.body !== undefined) headers['content-type'] ??= 'application/json';
  const res = await fetch(`${baseUrl}${path}`, {
    method, headers, body: opts.body === undefined ? undefined : typeof opts.body === 'string' ? opts.body : JSON.stringify(opts.body),
  });
  const text = await res.text();
  let body: any = text;
  try { body = text ? JSON.parse(text) : null; } catch { /* not JSON: keep the text */ }
  expectContract(method, path, { status: res.status, headers: res.headers, text });
  return { status: res.status, headers: res.headers, text, body };
}
