import Ajv2020Module from 'ajv/dist/2020.js';
import addFormatsModule from 'ajv-formats';
import type { OpenAPIHono } from '@hono/zod-openapi';
import type { Logger } from 'pino';
import { apiDocument, type ApiDocument } from './api-document.ts';
import type { AppEnv } from './env.ts';

/**
 * Responses checked against the OpenAPI document (src/http/api-document.ts), with Ajv (JSON
 * Schema 2020-12, the dialect of OpenAPI 3.1). Test-only: imported by src/server.ts only when
 * VALIDATE_RESPONSES is on (never in production; ajv is a devDependency), so the whole test suite
 * doubles as the contract check — a response whose status is not documented for its operation, or
 * whose body does not match that status's schema, is replaced by a 500 `contract_violation`
 * naming the operation and where the body differs. tests/helpers/contract.ts uses checkResponse
 * directly.
 */

// ajv and ajv-formats are CommonJS: under NodeNext their default import is module.exports, whose `default` is the export
const Ajv2020 = Ajv2020Module.default;
const addFormats = addFormatsModule.default;

export type ContractViolation = {
  operation: string;
  status: number;
  /** where the body differs: JSON pointer into the body, and what the schema wanted */
  errors: string[];
};

type Operation = { id: string; template: string; pattern: RegExp; literals: number; method: string; responses: Record<string, any> };

const DOC_ID = 'https://potentia.local/openapi.json';

/** A checker of responses against `doc`: by method + request path (also /functions/v1/… paths), status and body. */
export function createResponseChecker(doc: ApiDocument) {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  // the component schemas refer to each other as #/components/schemas/X: keep them under a root of that shape
  ajv.addSchema({ $id: DOC_ID, components: doc.components ?? {} });
  const validators = new Map<string, ReturnType<typeof ajv.compile>>();

  const operations: Operation[] = [];
  for (const [template, item] of Object.entries(doc.paths ?? {})) {
    for (const [method, op] of Object.entries(item as Record<string, any>)) {
      if (!op?.responses) continue;
      const parts = template.split('/');
      operations.push({
        id: op.operationId ?? `${method} ${template}`, template, method: method.toUpperCase(), responses: op.responses,
        pattern: new RegExp(`^${parts.map((p) => (/^\{\w+\}$/.test(p) ? '[^/]+' : p.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))).join('/')}$`),
        literals: parts.filter((p) => !p.startsWith('{')).length,
      });
    }
  }
  // a template with more fixed segments wins (/canvas/{id}/blocks before /canvas/{id})
  operations.sort((a, b) => b.literals - a.literals);

  /** The documented operation answering `method path`, if any (paths are matched as the document lists them). */
  function operationFor(method: string, path: string): Operation | undefined {
    let p = path.length > 1 ? path.replace(/\/+$/, '') : path;
    if (p.startsWith('/functions/v1/')) p = `/api/v1/${p.slice('/functions/v1/'.length)}`; // the same routes (createApp)
    return operations.find((o) => o.method === method.toUpperCase() && o.pattern.test(p));
  }

  /** One compiled validator per distinct schema (most operations share the Error responses). */
  function validator(schema: unknown) {
    const key = JSON.stringify(schema);
    let v = validators.get(key);
    if (!v) {
      // refs into the document, resolved against the root added above
      v = ajv.compile(JSON.parse(key.replaceAll('"#/components/', `"${DOC_ID}#/components/`)));
      validators.set(key, v);
    }
    return v;
  }

  /**
   * null when the response matches the document, or is for no documented operation (HEAD,
   * OPTIONS, /auth/v1, /debug/echo, unknown paths); otherwise what is wrong.
   */
  function checkResponse(res: { method: string; path: string; status: number; contentType: string | null; body: string }): ContractViolation | null {
    if (res.method === 'HEAD' || res.method === 'OPTIONS') return null;
    const op = operationFor(res.method, res.path);
    if (!op) return null;
    const violation = (errors: string[]): ContractViolation => ({ operation: op.id, status: res.status, errors });
    const documented = op.responses[String(res.status)] ?? op.responses.default;
    if (!documented) return violation([`status ${res.status} is not documented (documented: ${Object.keys(op.responses).join(', ')})`]);
    const content = documented.content as Record<string, { schema?: unknown }> | undefined;
    if (!content) return res.body === '' ? null : violation(['a body where the document says none']);
    const type = (res.contentType ?? '').split(';')[0]!.trim().toLowerCase();
    const media = content[type];
    if (!media) return violation([`content type ${type || '(none)'} is not documented (documented: ${Object.keys(content).join(', ')})`]);
    if (type !== 'application/json' || !media.schema) return null;
    let body: unknown;
    try { body = JSON.parse(res.body); } catch { return violation(['the body is not JSON']); }
    const validate = validator(media.schema);
    if (validate(body)) return null;
    return violation((validate.errors ?? []).slice(0, 10).map((e) =>
      `${e.instancePath || '/'} ${e.message ?? 'invalid'}${e.params && 'additionalProperty' in e.params ? `: ${String(e.params.additionalProperty)}` : ''}`));
  }

  return { checkResponse, operationFor };
}

/**
 * `app.fetch`, with every response checked against the app's document: a violation is logged
 * and answered 500 `contract_violation` instead (test runs only, see above).
 */
export function contractCheckedFetch(app: OpenAPIHono<AppEnv>, logger: Logger): typeof app.fetch {
  let checker: ReturnType<typeof createResponseChecker> | undefined;
  return async (request, ...rest) => {
    const res = await app.fetch(request, ...rest);
    checker ??= createResponseChecker(apiDocument(app)); // after every route is registered
    const violation = checker.checkResponse({
      method: request.method, path: new URL(request.url).pathname, status: res.status,
      contentType: res.headers.get('content-type'), body: await res.clone().text(),
    });
    if (!violation) return res;
    const message = `response of ${violation.operation} (${violation.status}) does not match the OpenAPI document: ${violation.errors.join('; ')}`;
    logger.error({ violation, path: new URL(request.url).pathname }, 'contract violation');
    console.error(`contract violation: ${request.method} ${new URL(request.url).pathname}: ${message}`);
    const headers = new Headers({ 'content-type': 'application/json' });
    const requestId = res.headers.get('x-request-id');
    if (requestId) headers.set('x-request-id', requestId);
    return new Response(JSON.stringify({ error: { code: 'contract_violation', message, ...violation } }), { status: 500, headers });
  };
}
