/** How a person looks in the demo: a stable color from their id, a short name and initials. */

export function colorFor(userId: string): string {
  let h = 0;
  for (const ch of userId) h = (h * 31 + ch.charCodeAt(0)) >>> 0;
  return `hsl(${h % 360} 70% 45%)`;
}

export function nameFor(email: string | undefined | null, userId: string): string {
  return email ? email.split('@')[0]! : `user ${userId.slice(0, 4)}`;
}

export function initials(name: string): string {
  const parts = name.split(/[\s._-]+/).filter(Boolean);
  return ((parts[0]?.[0] ?? '?') + (parts[1]?.[0] ?? '')).toUpperCase();
}
