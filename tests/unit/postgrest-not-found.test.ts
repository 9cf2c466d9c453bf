import { describe, expect, it } from 'vitest';
import { routeNotFound } from '../../src/http/not-found.ts';

// supabase-js `.from('blocks').select()` lands on GET /rest/v1/blocks: the 404 said only where to
// mutate blocks, so someone reading found no word of where reads are served locally.
describe('a PostgREST path on the local server', () => {
  it('a read (.from().select()) is pointed at the HTTP API routes that read, and still at mutate and SQL', () => {
    for (const method of ['GET', 'HEAD']) {
      const { message } = routeNotFound(method, '/rest/v1/blocks');
      expect(message).toContain(`no route ${method} /rest/v1/blocks: the local server does not serve PostgREST`);
      expect(message).toContain('GET /api/v1/canvas/{id}/blocks');
      expect(message).toContain('GET /api/v1/workspaces');
      expect(message).toContain('POST /api/v1/canvas/{id}/mutate');
      expect(message).toContain('docs/mutations.md');
    }
  });

  it('a call (.rpc()) or a write (.insert(), .update()) is pointed at mutate and SQL, with no read routes', () => {
    for (const [method, path] of [['POST', '/rest/v1/rpc/upsert_block_atomic'], ['POST', '/rest/v1/blocks'], ['PATCH', '/rest/v1/blocks'], ['GET', '/rest/v1/rpc/get_canvas_snapshot']]) {
      const { message } = routeNotFound(method!, path!);
      expect(message).toContain('POST /api/v1/canvas/{id}/mutate');
      expect(message).toContain('docs/mutations.md');
      expect(message).not.toContain('GET /api/v1/workspaces');
    }
  });
});
