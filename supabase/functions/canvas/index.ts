// Supabase edge function `canvas`: the same Hono routes the local server mounts at /api/v1/canvas.
import process from 'node:process';
import { createEdgeApp } from '../../../src/http/edge.ts';

const app = createEdgeApp('canvas', process.env);
Deno.serve(app.fetch);
