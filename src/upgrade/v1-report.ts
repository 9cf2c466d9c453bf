// The upgrade's report (the dry run prints it; a real run prints it at the end): what moves, what
// changes on the way by a documented rule, and what cannot move. Keys are the Counts keys of
// v1-plan.ts and upgrade.ts; docs/upgrade-v1.md, "The report", explains each line.
import type { Counts } from './v1-plan.ts';

const MOVES: [string, string][] = [
  ['users', 'users → auth.users (ids kept)'],
  ['workspaces', 'workspaces'],
  ['canvases', 'canvases'],
  ['blocks', 'blocks (LexoRank keys in v1 order, version 1)'],
  ['operations', 'create operations (canvas_seq 1..n per canvas)'],
  ['embeddings.moved', 'embeddings → blocks.vector'],
  ['blocks.queued_for_embedding', 'blocks queued for embedding (app.embedding_outbox)'],
];

const CHANGES: [string, string][] = [
  ['users.id_mapped', 'users: id not a uuid → name-based uuid'],
  ['users.email_duplicate', 'users: email (any case) already had by an earlier v1 user → no email'],
  ['users.email_taken', 'users: email already had by another v2 user → no email'],
  ['users.password_unusable', 'users: password hash not bcrypt → no password (reset it)'],
  ['canvases.id_mapped', 'canvases: id not a uuid → name-based uuid'],
  ['canvases.owner_missing', 'canvases: owner missing or not a v1 user → no owner'],
  ['canvases.title_fixed', 'canvases: title empty or over 500 characters → "Untitled" / cut'],
  ['canvases.empty', 'canvases: without blocks'],
  ['blocks.id_mapped', 'blocks: id not a uuid → name-based uuid'],
  ['blocks.parent_not_on_canvas', 'blocks: orphan parent (not a block of the same canvas) → top level'],
  ['blocks.parent_cycle', 'blocks: parent cycle → its first block in v1 order goes to the top level'],
  ['blocks.y_order_missing', 'blocks: y_order missing or not a number → after the numbered ones, by id'],
  ['blocks.y_order_ties', 'blocks: y_order equal to the previous block\'s → ordered by id'],
  ['blocks.type_fixed', 'blocks: type not ^[a-z][a-z0-9_]{0,39}$ → lower-cased, _ for other characters'],
  ['blocks.content_null', 'blocks: content null → {}'],
  ['blocks.content_invalid_json', 'blocks: content not JSON → {"text": the text}'],
  ['blocks.content_not_object', 'blocks: content JSON but not an object → {"text": s} / {"value": v}'],
  ['blocks.content_nul_removed', 'blocks: content with U+0000 (jsonb refuses it) → removed'],
  ['blocks.content_over_limit', 'blocks: content over 64 KiB (moved as is; edits must shrink it)'],
  ['blocks.author_unknown', 'blocks: created_by/updated_by not a v1 user → unknown (null)'],
  ['embeddings.dimensions', 'embeddings: not 1536 dimensions → block queued instead'],
  ['embeddings.non_finite', 'embeddings: NaN or infinite values → block queued instead'],
  ['embeddings.unparseable', 'embeddings: not a list of numbers → block queued instead'],
  ['embeddings.duplicate_rows', 'embeddings: extra rows for one block (the latest is used)'],
];

const CANNOT: [string, string][] = [
  ['blocks.canvas_missing', 'blocks of missing canvases: not moved'],
  ['embeddings.missing_block', 'embeddings of missing blocks: not moved'],
  ['users.duplicate_id', 'users with an id already read: not moved'],
  ['canvases.duplicate_id', 'canvases with an id already read: not moved'],
  ['workspaces.workspace_id_taken', 'workspaces whose id v2 already uses (not by this upgrade): no members added'],
  ['canvases.canvas_id_taken', 'canvases whose id v2 already uses (not by this upgrade): not moved'],
  ['canvases.workspace_id_taken', 'canvases of those workspaces: not moved'],
  ['canvases.block_ids_taken', 'canvases with block ids v2 already uses: not moved'],
];

const SKIPPED: [string, string][] = [
  ['users.already_present', 'users already in v2 (kept as they are)'],
  ['canvases.already_upgraded', 'canvases already upgraded (app.upgrade_v1_progress)'],
];

const fmt = (n: number) => n.toLocaleString('en-US');

export function formatReport(counts: Counts, heading: string, moveVerb: string): string[] {
  const lines = [heading];
  const section = (title: string, rows: [string, string][], always: boolean) => {
    const shown = rows.filter(([k]) => always || counts.get(k) > 0);
    lines.push(`${title}${shown.length === 0 ? ' none' : ''}`);
    for (const [k, label] of shown) lines.push(`  ${fmt(counts.get(k)).padStart(10)}  ${label}`);
  };
  section(`${moveVerb}:`, MOVES, true);
  section('changed on the way:', CHANGES, false);
  section('cannot move:', CANNOT, false);
  section('skipped:', SKIPPED, false);
  return lines;
}
