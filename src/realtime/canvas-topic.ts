import { canonicalUuid } from '../uuid.ts';

/**
 * The realtime topic of a canvas, `canvas:<id>`, with the id in its one canonical spelling: lower
 * case, 8-4-4-4-12, as Postgres writes a uuid. Topics are matched by their exact string
 * everywhere (the gateway's rooms and bus, the `access_changed` messages the database writes on
 * `canvas:<id>`), so a second spelling of the same id would be a room that access changes never
 * reach. The database admits only this spelling (internal.topic_canvas_id); the gateway names it
 * in its refusal and writes ids it reads elsewhere (the H1 URL) this way.
 */

/** The canvas id of sub-topic `subTopic` (without `realtime:`) when it is a canonical canvas topic, else null. */
export function canvasIdOfTopic(subTopic: string): string | null {
  const id = subTopic.startsWith('canvas:') ? subTopic.slice('canvas:'.length) : null;
  return id !== null && canonicalUuid(id) === id ? id : null;
}

/** Whether `subTopic` means a canvas (starts with `canvas:`, any case) without being its canonical topic. */
export function isMisspelledCanvasTopic(subTopic: string): boolean {
  return /^canvas:/i.test(subTopic) && canvasIdOfTopic(subTopic) === null;
}

/** Why a misspelled canvas topic is refused (a phx_reply reason). */
export const CANVAS_TOPIC_SPELLING =
  'invalid_input: topic: a canvas topic is canvas:<id> with the id a UUID in lower case (8-4-4-4-12 hex digits, as the API returns it)';
