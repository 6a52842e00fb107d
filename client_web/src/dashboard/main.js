// The coordinator's dashboard: polls /api/status and draws the run.
import { lineChart } from "../page/charts.js";

const $ = (id) => document.getElementById(id);
const metrics = lineChart($("metrics-chart"), ["round", "accuracy", "loss"], { height: 280 });
const timing = lineChart($("timing-chart"), ["round", "seconds"]);
const epsilon = lineChart($("epsilon-chart"), ["round", "ε"]);
const cell = (v, digits = 4) =>
  v === null || v === undefined ? "–" : typeof v === "number" && !Number.isInteger(v) ? v.toFixed(digits) : String(v);
const row = (values) => `<tr>${values.map((v) => `<td>${v}</td>`).join("")}</tr>`;
const esc = (s) => String(s ?? "").replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);

async function refresh() {
  let s;
  try {
    s = await (await fetch("/api/status")).json();
  } catch {
    $("summary").textContent = "coordinator unreachable, retrying…";
    return;
  }
  const r = s.rounds;
  $("summary").textContent =
    `run ${s.run_id} · ${s.state}${s.message ? ` (${s.message})` : ""} · model ${s.model} · ${s.strategy} · round ${s.current_round} of ${s.total_rounds} · ${s.clients_connected} clients connected`;
  metrics.set([r.map((x) => x.round), r.map((x) => x.accuracy), r.map((x) => x.loss)]);
  timing.set([r.map((x) => x.round), r.map((x) => x.seconds)]);
  const dp = r.filter((x) => x.epsilon !== null);
  epsilon.set([dp.map((x) => x.round), dp.map((x) => x.epsilon)]);
  $("dp").textContent = s.dp ? `clip ${s.dp.clip}, noise multiplier ${s.dp.noise}, δ = ${s.dp.delta}` : "off";
  $("clients").innerHTML = s.clients
    .map((c) =>
      row([c.node_id, esc(c.backend), esc(c.agent), esc(c.address), `${c.connected_seconds} s`, c.tasks_in_flight]),
    )
    .join("");
  $("rounds").innerHTML = [...r]
    .reverse()
    .map((x) =>
      row([x.round, cell(x.accuracy), cell(x.loss), x.clients, x.failures, cell(x.seconds, 2), cell(x.epsilon, 3)]),
    )
    .join("");
}

refresh();
setInterval(refresh, 2000);
