import { h } from './dom.ts';
import { initials, nameFor, peerColor } from './people.ts';

type Me = { userId: string; name: string; color: string };
type Other = { userId: string; name?: string; color?: string; cursor: { x: number; y: number } | null; typing: boolean };

/**
 * "Who is here" (an avatar per person, you first) and the others' mouse cursors over the canvas,
 * each with their name and color. Cursor elements are kept per user so they glide (CSS
 * transition) instead of jumping.
 */
export function renderPresence({ me, others, listEl, cursorsEl }: { me: Me; others: Other[]; listEl: HTMLElement; cursorsEl: HTMLElement }) {
  const person = (userId: string, name: string, color: string, note: string) =>
    h('li', { 'data-testid': 'presence-user', 'data-user-id': userId, title: `${name}${note}` },
      h('span', { class: 'avatar', style: `background:${color}`, 'data-testid': 'avatar' }, initials(name)),
      h('span', { class: 'name' }, name, note && h('small', {}, note)));
  listEl.replaceChildren(
    person(me.userId, me.name, me.color, ' (you)'),
    ...others.map((o) => person(o.userId, o.name ?? nameFor(null, o.userId), peerColor(o.color, o.userId), o.typing ? ' typing…' : '')));

  const keep = new Set<string>();
  for (const o of others) {
    if (!o.cursor) continue;
    keep.add(o.userId);
    let el = cursorsEl.querySelector<HTMLElement>(`[data-user-id="${CSS.escape(o.userId)}"]`);
    const color = peerColor(o.color, o.userId);
    const name = o.name ?? nameFor(null, o.userId);
    if (!el) {
      el = h('div', { class: 'remote-cursor', 'data-testid': 'remote-cursor', 'data-user-id': o.userId },
        cursorArrow(), h('span', { class: 'label' }));
      cursorsEl.append(el);
    }
    el.style.setProperty('--color', color);
    el.querySelector('.label')!.textContent = name;
    el.dataset.name = name;
    el.dataset.x = String(o.cursor.x);
    el.dataset.y = String(o.cursor.y);
    el.style.transform = `translate(${o.cursor.x}px, ${o.cursor.y}px)`;
  }
  for (const el of [...cursorsEl.children] as HTMLElement[]) if (!keep.has(el.dataset.userId!)) el.remove();
}

function cursorArrow(): SVGSVGElement {
  const svg = document.createElementNS('http://www.w3.org/2000/svg', 'svg');
  svg.setAttribute('width', '18');
  svg.setAttribute('height', '18');
  svg.setAttribute('viewBox', '0 0 18 18');
  const path = document.createElementNS('http://www.w3.org/2000/svg', 'path');
  path.setAttribute('d', 'M1 1 L1 15 L5 11 L8 17 L10.5 16 L7.5 10 L13 10 Z');
  svg.append(path);
  return svg;
}
