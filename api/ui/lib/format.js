// Numbers and times for people: 1.2k/s, 340 ms, 2.5 %, times in the browser's zone.

export function count(n) {
  if (n == null || Number.isNaN(n)) return "–";
  const a = Math.abs(n);
  if (a >= 1e9) return `${trim(n / 1e9)}G`;
  if (a >= 1e6) return `${trim(n / 1e6)}M`;
  if (a >= 1e3) return `${trim(n / 1e3)}k`;
  return a >= 10 || Number.isInteger(n) ? String(Math.round(n)) : trim(n, 2);
}

export function rate(perSecond) {
  if (perSecond == null || Number.isNaN(perSecond)) return "–";
  if (perSecond === 0) return "0/s";
  if (perSecond < 0.1) return `${trim(perSecond * 60, 1)}/min`;
  return `${count(perSecond)}/s`;
}

export function ms(value) {
  if (value == null || Number.isNaN(value)) return "–";
  if (value === 0) return "0 ms";
  if (value < 1) return `${trim(value, 2)} ms`;
  if (value < 1000) return `${Math.round(value)} ms`;
  if (value < 60_000) return `${trim(value / 1000, 2)} s`;
  return `${trim(value / 60_000, 1)} min`;
}

export function percent(ratio) {
  if (ratio == null || Number.isNaN(ratio)) return "–";
  const p = ratio * 100;
  return `${p === 0 ? "0" : p < 1 ? trim(p, 2) : trim(p, 1)} %`;
}

function trim(value, digits = 1) {
  return Number(value.toFixed(digits)).toString();
}

const dateTime = new Intl.DateTimeFormat(undefined, {
  month: "short", day: "numeric", hour: "2-digit", minute: "2-digit", second: "2-digit",
});
const clockTime = new Intl.DateTimeFormat(undefined, {
  hour: "2-digit", minute: "2-digit", second: "2-digit", fractionalSecondDigits: 3,
});

export function time(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso ?? "–") : dateTime.format(d);
}

export function clock(iso) {
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? String(iso ?? "–") : clockTime.format(d);
}

export const zone = Intl.DateTimeFormat().resolvedOptions().timeZone;
