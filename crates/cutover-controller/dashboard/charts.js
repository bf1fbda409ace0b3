// Small line charts in SVG, by hand: one line per version over the last N seconds, the
// newest second on the right. No chart library: a polyline per series is all it takes.

const SVG = "http://www.w3.org/2000/svg";
const WIDTH = 320;
const HEIGHT = 120;
const LEFT = 34;
const BOTTOM = 14;

function node(name, attributes, text) {
  const element = document.createElementNS(SVG, name);
  for (const [key, value] of Object.entries(attributes)) element.setAttribute(key, String(value));
  if (text !== undefined) element.textContent = text;
  return element;
}

/** A readable number for an axis label. */
export function short(value, unit) {
  if (unit === "%") return `${(value * 100).toFixed(value < 0.1 ? 1 : 0)}%`;
  if (unit === "s") return value < 1 ? `${(value * 1000).toFixed(0)}ms` : `${value.toFixed(1)}s`;
  return value >= 100 ? value.toFixed(0) : value.toFixed(1);
}

/**
 * A chart of `lines` ([{role: "stable"|"candidate", points: [{ago, value}]}]) over the
 * last `seconds`, `unit` being "%", "s" or "" (a rate), titled by `title`.
 */
export function lineChart(title, lines, seconds, unit) {
  const svg = node("svg", {
    viewBox: `0 0 ${WIDTH} ${HEIGHT}`,
    role: "img",
    "aria-label": title,
    preserveAspectRatio: "none",
  });
  const values = lines.flatMap((line) => line.points.map((p) => p.value)).filter((v) => v !== null);
  let top = Math.max(...values, 0);
  if (unit === "%") top = Math.max(top, 0.01);
  if (top === 0) top = 1;
  const x = (ago) => LEFT + ((seconds - ago) / seconds) * (WIDTH - LEFT - 4);
  const y = (value) => HEIGHT - BOTTOM - (value / top) * (HEIGHT - BOTTOM - 6);
  svg.append(
    node("line", { class: "axis", x1: LEFT, y1: HEIGHT - BOTTOM, x2: WIDTH, y2: HEIGHT - BOTTOM }),
    node("line", { class: "axis", x1: LEFT, y1: 4, x2: LEFT, y2: HEIGHT - BOTTOM }),
    node("text", { x: 2, y: 12 }, short(top, unit)),
    node("text", { x: 2, y: HEIGHT - BOTTOM }, short(0, unit)),
    node("text", { x: LEFT, y: HEIGHT - 2 }, `-${seconds}s`),
    node("text", { x: WIDTH - 24, y: HEIGHT - 2 }, "now"),
  );
  for (const line of lines) {
    const points = line.points
      .filter((p) => p.value !== null && p.ago <= seconds)
      .sort((a, b) => b.ago - a.ago)
      .map((p) => `${x(p.ago).toFixed(1)},${y(p.value).toFixed(1)}`);
    if (points.length === 0) continue;
    svg.append(node("polyline", { class: line.role, points: points.join(" ") }));
  }
  return svg;
}

/**
 * Per-second series from a traffic document's version: request rate, error rate and p99
 * latency, with quiet seconds as zero requests (and no error rate or latency).
 */
export function seriesOf(version, seconds) {
  const byAgo = new Map(version.series.map((s) => [s.ago, s]));
  const requests = [];
  const errors = [];
  const latency = [];
  // The second under way is partial: leave it out so the line does not dip at the end.
  for (let ago = seconds; ago >= 1; ago -= 1) {
    const second = byAgo.get(ago);
    requests.push({ ago, value: second ? second.requests : 0 });
    errors.push({ ago, value: second && second.requests > 0 ? second.errors / second.requests : null });
    latency.push({ ago, value: second ? second.latencyP99 : null });
  }
  return { requests, errors, latency };
}
