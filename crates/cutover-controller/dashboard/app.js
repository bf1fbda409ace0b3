// The dashboard: a list of every release and a page per release, routed by the URL's
// fragment (#/ and #/releases/NAME) so the server has one page to serve. Everything from
// the API is put on the page with textContent, never as HTML.

import { ApiError, config, follow, get, post, setToken, token } from "./api.js";
import { lineChart, seriesOf } from "./charts.js";

const settings = config();
const main = document.getElementById("main");
const live = document.getElementById("live");
const CHART_SECONDS = 60;
const LIST_EVERY_MS = 3000;
const TRAFFIC_EVERY_MS = 2000;

/** An element: `h("td", {class: "num"}, "12")`. Children may be strings or nodes. */
function h(tag, attributes = {}, ...children) {
  const element = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === false || value === null || value === undefined) continue;
    if (key === "text") element.textContent = value;
    else if (key.startsWith("on")) element.addEventListener(key.slice(2), value);
    else element.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    element.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return element;
}

function percent(value, digits = 1) {
  return value === null || value === undefined ? "–" : `${value.toFixed(digits)}%`;
}

function seconds(value) {
  if (value === null || value === undefined) return "–";
  return value < 1 ? `${(value * 1000).toFixed(1)} ms` : `${value.toFixed(2)} s`;
}

function time(ms) {
  return ms ? new Date(ms).toLocaleString() : "–";
}

/** Says `text` at the top of the page: an error unless `info`. */
function say(text, info = false) {
  const message = document.getElementById("message");
  message.textContent = text;
  message.className = info ? "message info" : "message";
  message.hidden = !text;
}

/** Whether a release needs someone: paused for a person, inconclusive, or failed. */
function needsAttention(s) {
  const verdict = s.analysis && s.analysis.verdict;
  return (
    (s.waitingForPerson && !s.done) ||
    verdict === "inconclusive" ||
    verdict === "failure" ||
    verdict === "error" ||
    s.outcome === "rolledBack" ||
    s.problem !== null
  );
}

function analysisState(s) {
  if (!s.analysis) return "–";
  const verdict = s.analysis.verdict || "running";
  return `run ${s.analysis.run} (step ${s.analysis.step + 1}): ${verdict}`;
}

function stepText(s) {
  return s.step === null ? `– of ${s.steps}` : `${s.step + 1} of ${s.steps}`;
}

// ---------------------------------------------------------------------------------------
// Routing: every view returns a function that stops its timers and streams.

let stopView = () => {};

function route() {
  stopView();
  say("");
  const match = location.hash.match(/^#\/releases\/([^/]+)$/);
  stopView = match ? releaseView(decodeURIComponent(match[1])) : listView();
}

window.addEventListener("hashchange", route);

/** Shows a form for the read token, then `retry`. */
function askReadToken(retry, refused) {
  const input = h("input", { type: "password", id: "read-token", autocomplete: "off" });
  main.replaceChildren(
    h(
      "form",
      {
        class: "card",
        id: "read-token-form",
        onsubmit: (event) => {
          event.preventDefault();
          setToken(input.value);
          retry();
        },
      },
      h("h2", { text: "This controller needs a token to read" }),
      refused ? h("p", { class: "attention", text: refused }) : null,
      h("label", {}, "Token (the read token or the API token; kept in this tab only) ", input),
      h("div", { class: "buttons" }, h("button", { type: "submit", class: "primary", text: "Show releases" })),
    ),
  );
}

/**
 * Handles a failed read: a refused token asks for another (and returns false: stop);
 * anything else is said, and the caller tries again (true).
 */
function readFailed(error, retry) {
  if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
    setToken(null);
    askReadToken(retry, error.message);
    return false;
  }
  say(`cannot read from the controller: ${error.message}`);
  return true;
}

// ---------------------------------------------------------------------------------------
// The list of releases.

function listView() {
  live.textContent = "refreshing every 3 s";
  live.className = "live on";
  const search = h("input", { type: "search", id: "search", placeholder: "search releases, versions, phases" });
  const attention = h("input", { type: "checkbox", id: "attention" });
  const body = h("tbody", { id: "release-rows" });
  const note = h("p", { class: "muted", id: "list-note" });
  main.replaceChildren(
    h(
      "div",
      { class: "toolbar" },
      search,
      h("label", {}, attention, " needs attention (paused for a person, inconclusive, failed)"),
    ),
    h(
      "div",
      { class: "card scroll" },
      h(
        "table",
        { id: "releases" },
        h(
          "thead",
          {},
          h(
            "tr",
            {},
            ["release", "phase", "stable", "candidate", "weight", "step", "analysis"].map((t) =>
              h("th", { text: t, class: t === "step" || t === "analysis" ? "hide-narrow" : null }),
            ),
          ),
        ),
        body,
      ),
      note,
    ),
  );
  let releases = [];
  let quarantined = [];
  function draw() {
    const words = search.value.toLowerCase().split(/\s+/).filter(Boolean);
    const shown = releases.filter((s) => {
      if (attention.checked && !needsAttention(s)) return false;
      const haystack = [s.name, s.phase, s.description, s.stable.version, s.candidate.version, s.backend]
        .join(" ")
        .toLowerCase();
      return words.every((w) => haystack.includes(w));
    });
    body.replaceChildren(
      ...shown.map((s) =>
        h(
          "tr",
          { "data-release": s.name },
          h("td", {}, h("a", { href: `#/releases/${encodeURIComponent(s.name)}`, text: s.name })),
          h(
            "td",
            {},
            h("span", { class: `phase ${s.phase}`, text: s.phase }),
            needsAttention(s) ? h("span", { class: "attention", text: " needs attention" }) : null,
          ),
          h("td", { text: s.stable.version }),
          h("td", { text: s.candidate.version }),
          h("td", { class: "num weight", text: `${s.weight}%` }),
          h("td", { class: "num hide-narrow", text: stepText(s) }),
          h("td", { class: "hide-narrow", text: analysisState(s) }),
        ),
      ),
    );
    const hidden = releases.length - shown.length;
    const parts = [`${shown.length} of ${releases.length} releases`];
    if (hidden > 0) parts.push(`${hidden} hidden by the filter`);
    if (quarantined.length > 0) parts.push(`quarantined: ${quarantined.map((q) => q.name).join(", ")}`);
    note.textContent = parts.join("; ");
  }
  search.addEventListener("input", draw);
  attention.addEventListener("change", draw);
  let timer = null;
  let stopped = false;
  async function load() {
    try {
      const answer = await get("/releases");
      releases = answer.releases;
      quarantined = answer.quarantined || [];
      say("");
      draw();
    } catch (error) {
      if (!readFailed(error, route)) return;
    }
    if (!stopped) timer = setTimeout(load, LIST_EVERY_MS);
  }
  load();
  return () => {
    stopped = true;
    clearTimeout(timer);
  };
}

// ---------------------------------------------------------------------------------------
// One release.

/** What each command does, in words, for the confirmation. */
function consequence(command, s) {
  const next = s.step !== null && s.step + 1 < s.plan.length ? s.plan[s.step + 1] : null;
  switch (command) {
    case "promote":
      return next
        ? `The rollout leaves step ${s.step + 1} (${s.plan[s.step]}) and goes on to step ${s.step + 2}: ${next}.`
        : `The rollout leaves its last step: ${s.candidate.version} becomes stable and takes all traffic, and ${s.stable.version} is scaled down.`;
    case "promote-full":
      return `Every remaining step is skipped: ${s.candidate.version} becomes stable and takes all traffic now, and ${s.stable.version} is scaled down.`;
    case "abort":
      return `The rollout is rolled back: all traffic goes to ${s.stable.version}, ${s.candidate.version} is retired, and the rollout ends as aborted.`;
    case "pause":
      return `The rollout is held where it is (${s.description}): no timer or analysis moves it on until someone resumes it.`;
    case "resume":
      return `The rollout goes on from where it is held (${s.description}).`;
    case "retry":
      return `The rollout of ${s.candidate.version} starts again from its first step (attempt ${s.attempt + 1}).`;
    default:
      return "";
  }
}

const COMMANDS = [
  { id: "promote", label: "Promote", path: "promote", primary: true },
  { id: "promote-full", label: "Promote full", path: "promote?full=true" },
  { id: "pause", label: "Pause", path: "pause" },
  { id: "resume", label: "Resume", path: "resume" },
  { id: "retry", label: "Retry", path: "retry" },
  { id: "abort", label: "Abort", path: "abort", danger: true },
];

/** Whether a command fits the rollout's state (the API has the last word). */
function fits(command, s) {
  const walking = !s.done && s.phase === "step";
  switch (command) {
    case "promote":
    case "promote-full":
      return walking;
    case "pause":
      return walking && !s.paused;
    case "resume":
      return !s.done && (s.paused || s.waitingForPerson);
    case "abort":
      return !s.done && s.phase !== "rollingBack";
    case "retry":
      return s.done && s.outcome !== "promoted";
    default:
      return false;
  }
}

/** Asks "are you sure", with the token when this tab has none; resolves to true or false. */
function confirmCommand(title, text) {
  const dialog = document.getElementById("confirm");
  const form = document.getElementById("confirm-form");
  const label = document.getElementById("token-label");
  const input = document.getElementById("token-input");
  document.getElementById("confirm-title").textContent = title;
  document.getElementById("confirm-text").textContent = text;
  const needsToken = !token();
  label.hidden = !needsToken;
  input.required = needsToken;
  input.value = "";
  return new Promise((resolve) => {
    const finish = (ok) => {
      form.removeEventListener("submit", submit);
      cancel.removeEventListener("click", dismiss);
      dialog.removeEventListener("cancel", dismiss);
      dialog.close();
      resolve(ok);
    };
    const submit = (event) => {
      event.preventDefault();
      if (needsToken) setToken(input.value);
      finish(true);
    };
    const dismiss = (event) => {
      event.preventDefault();
      finish(false);
    };
    const cancel = document.getElementById("confirm-cancel");
    form.addEventListener("submit", submit);
    cancel.addEventListener("click", dismiss);
    dialog.addEventListener("cancel", dismiss);
    dialog.showModal();
    (needsToken ? input : document.getElementById("confirm-ok")).focus();
  });
}

function releaseView(name) {
  const sections = {
    head: h("div", { class: "card", id: "summary" }),
    actions: settings.readOnly ? null : h("div", { class: "card", id: "actions" }),
    steps: h("div", { class: "card", id: "plan" }),
    traffic: h("div", { class: "card scroll", id: "traffic" }, h("h2", { text: "Traffic" })),
    charts: h("div", { class: "card", id: "charts" }, h("h2", { text: `Last ${CHART_SECONDS} s` })),
    analysis: h("div", { class: "card scroll", id: "analysis" }),
    guardrails: h("div", { class: "card scroll", id: "guardrails" }, h("h2", { text: "Guardrails" })),
    events: h("div", { class: "card", id: "events" }),
    earlier: h("div", { class: "card scroll", id: "earlier" }),
  };
  main.replaceChildren(
    h("p", {}, h("a", { href: "#/", text: "← all releases" })),
    ...Object.values(sections).filter(Boolean),
  );
  let status = null;
  let lastEvent = undefined;
  let stopped = false;
  let trafficTimer = null;

  function drawStatus(s) {
    status = s;
    sections.head.replaceChildren(
      h("h2", {}, h("span", { id: "release-name", text: s.name }), " ", h("span", { class: `phase ${s.phase}`, id: "phase", text: s.phase })),
      h("p", { id: "description", text: s.description }),
      h(
        "dl",
        { class: "facts" },
        h("dt", { text: "stable" }),
        h("dd", { id: "stable-version", text: s.stable.version }),
        h("dt", { text: "candidate" }),
        h("dd", { id: "candidate-version", text: s.candidate.version }),
        h("dt", { text: "weight set" }),
        h("dd", { id: "weight-set", text: `${s.weight}% on ${s.candidate.version}` }),
        h("dt", { text: "step" }),
        h("dd", { id: "step", text: stepText(s) }),
        h("dt", { text: "strategy" }),
        h("dd", { text: `${s.strategy} on ${s.backend}, attempt ${s.attempt}` }),
        h("dt", { text: "started" }),
        h("dd", { text: time(s.startedAt) }),
        s.waitingForPerson && !s.done ? [h("dt", { text: "waiting" }), h("dd", { class: "attention", id: "waiting", text: "for a person: promote or resume" })] : null,
        s.paused ? [h("dt", { text: "paused" }), h("dd", { class: "attention", text: "yes" })] : null,
        s.outcome ? [h("dt", { text: "outcome" }), h("dd", { id: "outcome", text: s.outcome })] : null,
        s.reason ? [h("dt", { text: "reason" }), h("dd", { id: "reason", text: s.reason })] : null,
        s.problem ? [h("dt", { text: "problem" }), h("dd", { class: "attention", text: s.problem })] : null,
      ),
    );
    if (sections.actions) {
      sections.actions.replaceChildren(
        h("h2", { text: "Commands" }),
        h(
          "div",
          { class: "actions" },
          COMMANDS.map((c) =>
            h("button", {
              type: "button",
              id: `action-${c.id}`,
              class: c.primary ? "primary" : c.danger ? "danger" : null,
              disabled: !fits(c.id, s),
              text: c.label,
              onclick: () => run(c),
            }),
          ),
        ),
      );
    }
    sections.steps.replaceChildren(
      h("h2", { text: "Plan" }),
      h(
        "ol",
        { class: "steps", id: "steps" },
        s.plan.map((text, i) => {
          const current = s.phase === "step" && s.step === i;
          const done = s.phase !== "step" ? s.outcome === "promoted" || s.phase === "promoting" || s.phase === "scalingDown" : s.step > i;
          return h("li", { class: current ? "current" : done ? "done" : null, "aria-current": current ? "step" : null, text: `${i + 1}. ${text}` });
        }),
      ),
    );
    drawAnalysis(s);
    if (s.lastEvent !== lastEvent) {
      lastEvent = s.lastEvent;
      loadHistory();
    }
  }

  function drawAnalysis(s) {
    const a = s.analysis;
    if (!a) {
      sections.analysis.replaceChildren(h("h2", { text: "Analysis" }), h("p", { class: "muted", text: "no analysis has measured yet" }));
      return;
    }
    sections.analysis.replaceChildren(
      h("h2", {}, `Analysis run ${a.run} at step ${a.step + 1}: `, h("span", { id: "analysis-verdict", class: `verdict-${a.verdict || "running"}`, text: a.verdict || "running" })),
      h(
        "table",
        { id: "metrics" },
        h("thead", {}, h("tr", {}, ["metric", "verdict", "last value", "limits", "pass / fail / inconclusive / error", "measurements", "why"].map((t) => h("th", { text: t })))),
        h(
          "tbody",
          {},
          a.metrics.map((m) =>
            h(
              "tr",
              { "data-metric": m.name },
              h("td", { text: m.name }),
              h("td", { class: `verdict verdict-${m.verdict || "running"}`, text: m.verdict || "measuring" }),
              h("td", { class: "num last-value", text: m.lastValue === null ? "–" : String(Number(m.lastValue.toPrecision(4))) }),
              h("td", { text: [m.min !== null ? `min ${m.min}` : null, m.max !== null ? `max ${m.max}` : null, m.compares ? "vs stable" : null].filter(Boolean).join(", ") || "–" }),
              h("td", { class: "num", text: `${m.passed} / ${m.failed} / ${m.inconclusive} / ${m.errors}` }),
              h("td", { class: "num", text: `${m.measurements} taken; count ${m.count}${m.maxCount > m.count ? `, up to ${m.maxCount} while undecided` : ""}` }),
              h("td", { text: m.lastReason || "" }),
            ),
          ),
        ),
      ),
    );
  }

  async function loadHistory() {
    try {
      const history = await get(`/releases/${encodeURIComponent(name)}/history`);
      sections.events.replaceChildren(
        h("h2", { text: "Events" }),
        h("ol", { class: "events", id: "event-list" }, history.events.slice().reverse().map((e) => h("li", {}, h("span", { class: "muted", text: `${time(e.at)} ` }), e.message))),
      );
      sections.earlier.replaceChildren(
        h("h2", { text: "Earlier rollouts" }),
        history.earlier.length === 0
          ? h("p", { class: "muted", text: "none" })
          : h(
              "table",
              {},
              h("thead", {}, h("tr", {}, ["from", "to", "outcome", "reason", "started", "finished"].map((t) => h("th", { text: t })))),
              h("tbody", {}, history.earlier.slice().reverse().map((r) => h("tr", {}, h("td", { text: r.stableVersion }), h("td", { text: r.candidateVersion }), h("td", { text: r.outcome }), h("td", { text: r.reason || "" }), h("td", { text: time(r.startedAt) }), h("td", { text: time(r.finishedAt) })))),
            ),
      );
    } catch (error) {
      if (!stopped) readFailed(error, route);
    }
  }

  async function loadTraffic() {
    try {
      const traffic = await get(`/releases/${encodeURIComponent(name)}/traffic?seconds=${CHART_SECONDS}`);
      drawTraffic(traffic);
    } catch (error) {
      if (stopped || !readFailed(error, route)) return;
    }
    if (!stopped) trafficTimer = setTimeout(loadTraffic, TRAFFIC_EVERY_MS);
  }

  function drawTraffic(t) {
    if (!t.available) {
      sections.traffic.replaceChildren(h("h2", { text: "Traffic" }), h("p", { class: "muted", text: "this controller runs no proxy (--no-proxy): the proxies that pull its routes count the traffic" }));
      sections.charts.hidden = true;
      return;
    }
    const set = (v) => (v.role === "candidate" ? t.weightSet : 100 - t.weightSet);
    sections.traffic.replaceChildren(
      h("h2", { text: `Traffic over the last ${t.seconds} s` }),
      h(
        "table",
        { id: "traffic-table" },
        h("thead", {}, h("tr", {}, ["version", "weight set", "share of requests", "", "requests/s", "error rate", "p50", "p99"].map((x) => h("th", { text: x })))),
        h(
          "tbody",
          {},
          t.versions.map((v) => {
            const bar = h("span", { class: `w-${v.role}` });
            bar.style.width = `${v.share || 0}%`;
            return h(
              "tr",
              { "data-version": v.version, "data-role": v.role },
              h("td", {}, h("span", { class: `legend-${v.role}`, text: "■ " }), `${v.version} (${v.role})`),
              h("td", { class: "num weight-set", text: `${set(v)}%` }),
              h("td", { class: "num share", text: percent(v.share) }),
              h("td", { class: "hide-narrow" }, h("div", { class: "bar" }, bar)),
              h("td", { class: "num", text: v.window.requestRate.toFixed(1) }),
              h("td", { class: "num error-rate", text: v.window.errorRate === null ? "–" : percent(v.window.errorRate * 100, 2) }),
              h("td", { class: "num", text: seconds(v.window.latencyP50) }),
              h("td", { class: "num", text: seconds(v.window.latencyP99) }),
            );
          }),
        ),
      ),
    );
    const series = t.versions.map((v) => ({ role: v.role, ...seriesOf(v, CHART_SECONDS) }));
    const chart = (title, key, unit) =>
      h("div", { class: "chart" }, h("p", { class: "muted", text: title }), lineChart(title, series.map((s) => ({ role: s.role, points: s[key] })), CHART_SECONDS, unit));
    sections.charts.hidden = false;
    sections.charts.replaceChildren(
      h("h2", {}, `Last ${CHART_SECONDS} s, per version: `, t.versions.map((v) => h("span", { class: `legend-${v.role}`, text: `■ ${v.version} ` }))),
      h("div", { class: "grid" }, chart("requests per second", "requests", ""), chart("error rate", "errors", "%"), chart("latency p99", "latency", "s")),
    );
    sections.guardrails.replaceChildren(
      h("h2", { text: "Guardrails" }),
      t.guardrails.length === 0
        ? h("p", { class: "muted", text: "none" })
        : h(
            "table",
            { id: "guardrail-table" },
            h("thead", {}, h("tr", {}, ["guardrail", "watches", "max", "window", "min requests"].map((x) => h("th", { text: x })))),
            h("tbody", {}, t.guardrails.map((g) => h("tr", {}, h("td", { text: g.name }), h("td", { text: g.metric }), h("td", { class: "num", text: String(g.max) }), h("td", { text: String(g.window) }), h("td", { class: "num", text: String(g.minRequests) })))),
          ),
    );
  }

  async function run(command) {
    if (!status) return;
    const ok = await confirmCommand(`${command.label} ${name}?`, consequence(command.id, status));
    if (!ok) return;
    say(`${command.label.toLowerCase()}: sending…`, true);
    try {
      const answer = await post(`/releases/${encodeURIComponent(name)}/${command.path}`);
      say(`${command.label.toLowerCase()}: accepted (${answer.description})`, true);
      drawStatus(answer);
    } catch (error) {
      if (error instanceof ApiError && (error.status === 401 || error.status === 403)) {
        setToken(null);
        say(`the controller refused the token: ${error.message}`);
      } else {
        say(`${command.label.toLowerCase()} refused: ${error.message}`);
      }
    }
  }

  const stopFollow = follow(
    name,
    (s) => {
      if (!stopped) drawStatus(s);
    },
    (state) => {
      live.textContent = state === "live" ? "live" : state === "ended" ? "finished: no more updates" : "reconnecting";
      live.className = state === "live" ? "live on" : "live";
    },
  );
  loadTraffic();
  return () => {
    stopped = true;
    stopFollow();
    clearTimeout(trafficTimer);
  };
}

// ---------------------------------------------------------------------------------------

document.getElementById("mode").textContent = settings.readOnly ? "read-only" : "";
// Read-only: not a single write control on the page, the confirmation and its token
// field included.
if (settings.readOnly) document.getElementById("confirm").remove();
if (settings.readsNeedToken && !token()) askReadToken(route);
else route();
