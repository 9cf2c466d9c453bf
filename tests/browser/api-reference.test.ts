import type { Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Server } from '../../src/server.ts';
import { launchChromium, pageErrors, screenshot } from '../helpers/browser.ts';
import { startTestServer } from '../helpers/http.ts';

// /docs/api: Swagger UI, served from the swagger-ui-dist package by the server itself (no CDN),
// renders every operation of /api/v1/openapi.json.

let server: Server;
let browser: Browser;

beforeAll(async () => {
  server = await startTestServer();
  browser = await launchChromium();
}, 60_000);
afterAll(async () => {
  await browser?.close();
  await server?.stop();
});

describe('the API reference page', () => {
  it('renders every operation of the OpenAPI document, from files the server serves', async () => {
    const doc = await (await fetch(`${server.url}/api/v1/openapi.json`)).json() as { paths: Record<string, Record<string, { operationId?: string }>> };
    const expected = Object.entries(doc.paths)
      .flatMap(([path, item]) => Object.keys(item).filter((m) => ['get', 'post', 'put', 'patch', 'delete'].includes(m))
        .map((method) => `${method.toUpperCase()} ${path}`))
      .sort();
    expect(expected.length).toBeGreaterThan(10);

    const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    const page = await context.newPage();
    const errors = pageErrors(page);
    const outside: string[] = [];
    page.on('request', (req) => { if (!req.url().startsWith(server.url)) outside.push(req.url()); });
    await page.goto(`${server.url}/docs/api`);
    await page.locator('.opblock').first().waitFor({ timeout: 45_000 });

    const rendered = await page.$$eval('.opblock', (blocks) => blocks.map((b) => {
      const method = b.querySelector('.opblock-summary-method')?.textContent?.trim() ?? '';
      const path = b.querySelector('.opblock-summary-path')?.getAttribute('data-path') ?? '';
      return `${method} ${path}`;
    }));
    expect(rendered.sort()).toEqual(expected);
    expect(await page.locator('.info .title').innerText()).toContain('Potentia API');
    expect(outside, 'the page loads nothing from outside the server').toEqual([]);
    expect(errors).toEqual([]);
    await screenshot(page, 'api-reference');
    await context.close();
  }, 60_000);

  it('serves its assets with content types and cache headers, and leaves the API routes alone', async () => {
    const page = await fetch(`${server.url}/docs/api`);
    expect(page.status).toBe(200);
    expect(page.headers.get('content-type')).toBe('text/html; charset=utf-8');
    expect(page.headers.get('cache-control')).toBe('no-cache');

    const bundle = await fetch(`${server.url}/docs/api/swagger-ui-bundle.js`);
    expect(bundle.status).toBe(200);
    expect(bundle.headers.get('content-type')).toBe('text/javascript; charset=utf-8');
    expect(bundle.headers.get('cache-control')).toBe('public, max-age=86400');
    const etag = bundle.headers.get('etag')!;
    expect(etag).toMatch(/^W\/"/);
    await bundle.arrayBuffer();
    const again = await fetch(`${server.url}/docs/api/swagger-ui-bundle.js`, { headers: { 'If-None-Match': etag } });
    expect(again.status).toBe(304);

    const css = await fetch(`${server.url}/docs/api/swagger-ui.css`);
    expect(css.headers.get('content-type')).toBe('text/css; charset=utf-8');
    await css.arrayBuffer();

    // only the files the page needs: the rest of the package, and any other path, is a JSON 404
    for (const path of ['/docs/api/package.json', '/docs/api/..%2F..%2Fpackage.json', '/assets/..%2Fsecret', '/docs/api/index.html']) {
      const res = await fetch(`${server.url}${path}`);
      expect([400, 404], path).toContain(res.status);
      expect(res.headers.get('content-type'), path).toContain('application/json');
      await res.arrayBuffer();
    }
    expect((await fetch(`${server.url}/health`)).status).toBe(200);
    const api = await fetch(`${server.url}/api/v1/canvas`);
    expect(api.status).toBe(401);
    expect((await api.json()).error.code).toBe('unauthorized');
    const missing = await fetch(`${server.url}/no-such-page`);
    expect(missing.status).toBe(404);
    expect((await missing.json()).error.code).toBe('not_found');
  });
});
