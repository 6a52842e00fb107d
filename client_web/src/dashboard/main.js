// The coordinator's dashboard: polls /api/status (public: counts, no client named) and draws the
// run; given the admin token, also the per-client table from /api/admin/clients.
import { lineChart } from "../page/charts.js";

const $ = (id) => document.getElementById(id);
const metrics = lineChart($("metrics-chart"), ["round", "accuracy", "macro-F1", "loss"], { height: 280 });
const timing = lineChart($("timing-chart"), ["round", "seconds"]);
const epsilon = lineChart($("epsilon-chart"), ["round", "ε"]);
const cell = (v, digits = 4) =>
  v === null || v === undefined ? "–" : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(digits) : String(v);
const row = (values) => `<tr>${values.map((v) => `<td>${v}</td>`).join("")}</tr>`;
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

const ADMIN_TOKEN = "pollen-admin-token"; // sessionStorage: gone with the tab, never in the URL

$("admin-form").onsubmit = (ev) => {
  ev.preventDefault();
  const token = $("admin-token").value.trim();
  if (token) sessionStorage.setItem(ADMIN_TOKEN, token);
  else sessionStorage.removeItem(ADMIN_TOKEN);
  $("admin-token").value = "";
  refresh();
};
$("admin-forget").onclick = () => {
  sessionStorage.removeItem(ADMIN_TOKEN);
  refresh();
};

/** The per-client table, or why it is not shown. */
async function refreshClients() {
  const token = sessionStorage.getItem(ADMIN_TOKEN);
  $("clients-card").hidden = !token;
  $("admin-forget").hidden = !token;
  if (!token) return;
  const response = await fetch("/api/admin/clients", { headers: { Authorization: `Bearer ${token}` } });
  if (!response.ok) {
    $("admin-status").textContent =
      response.status === 401 ? "wrong admin token" : `admin API: HTTP ${response.status}`;
    $("clients").innerHTML = "";
    return;
  }
  $("admin-status").textContent = "";
  $("clients").innerHTML = (await response.json())
    .map((c) =>
      row([c.node_id, esc(c.backend), esc(c.agent), esc(c.address), `${c.connected_seconds} s`, c.tasks_in_flight]),
    )
    .join("");
}

async function refresh() {
  let s;
  try {
    s = await (await fetch("/api/status")).json();
  } catch {
    $("summary").textContent = "coordinator unreachable, retrying…";
    return;
  }
  const r = s.rounds;
  const backends = Object.entries(s.clients_by_backend ?? {})
    .map(([backend, n]) => `${n} ${backend}`)
    .join(", ");
  $("summary").textContent =
    `run ${s.run_id} · ${s.state}${s.message ? ` (${s.message})` : ""} · model ${s.model} · ${s.strategy} · round ${s.current_round} of ${s.total_rounds} · ${s.clients_connected} clients connected${backends ? ` (${backends})` : ""}`;
  const score = (x, key) => x.metrics?.[key] ?? null;
  metrics.set([
    r.map((x) => x.round),
    r.map((x) => x.accuracy),
    r.map((x) => score(x, "macro_f1")),
    r.map((x) => x.loss),
  ]);
  timing.set([r.map((x) => x.round), r.map((x) => x.seconds)]);
  const dp = r.filter((x) => x.epsilon !== null);
  epsilon.set([dp.map((x) => x.round), dp.map((x) => x.epsilon)]);
  $("dp").textContent = s.dp ? `clip ${s.dp.clip}, noise multiplier ${s.dp.noise}, δ = ${s.dp.delta}` : "off";
  await refreshClients().catch(() => {
    $("admin-status").textContent = "admin API unreachable";
  });
  $("rounds").innerHTML = [...r]
    .reverse()
    .map((x) =>
      row([
        x.round,
        cell(x.accuracy),
        cell(score(x, "macro_f1") ?? score(x, "mae")),
        cell(x.loss),
        cell(score(x, "federated_accuracy") ?? score(x, "federated_loss")),
        x.clients,
        x.failures,
        cell(x.seconds, 2),
        cell(x.epsilon, 3),
      ]),
    )
    .join("");
}

refresh();
setInterval(refresh, 2000);
