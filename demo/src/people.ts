/** How a person looks in the demo: a stable color from their id, a short name and initials. */

export function colorFor(userId: string): string {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 70% 45%)`;
}

/**
 * The color to draw a peer with: theirs when it is one plain CSS color (a hex, a name, or rgb()/
 * hsl()/… of numbers), else the one of their id. A peer's color is free text their client sends:
 * placed in a style it could be `url(…)` (every other browser fetches it: their address to a
 * tracker), a second declaration (`red;position:fixed;…`), or `var(--x, url(…))`, which the
 * browser's own check (CSS.supports) accepts as a color.
 */
export function peerColor(color: string | undefined, userId: string): string {
  return color !== undefined && PLAIN_COLOR.test(color) && CSS.supports('color', color) ? color : colorFor(userId);
}

const PLAIN_COLOR = /^(?:#[0-9a-f]{3,8}|[a-z]{3,30}|(?:rgba?|hsla?|hwb|lab|lch|oklab|oklch)\([0-9a-z%.,/ +-]{1,80}\))$/i;

export function nameFor(email: string | undefined | null, userId: string): string {
  return email ? email.split('@')[0]! : `user ${userId.slice(0, 4)}`;
}

export function initials(name: string): string {
  const parts = name.split(/[\s._-]+/).filter(Boolean);
  return ((parts[0]?.[0] ?? '?') + (parts[1]?.[0] ?? '')).toUpperCase();
}
