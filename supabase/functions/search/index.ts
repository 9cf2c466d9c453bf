// Supabase edge function `search`: semantic search over a canvas, the same Hono routes the
// local server mounts at /api/v1/search (and at /api/v1/canvas/{id}/search).
import process from 'node:process';
import { createEdgeApp } from '../../../src/http/edge.ts';

const app = createEdgeApp('search', process.env);
Deno.serve(app.fetch);
