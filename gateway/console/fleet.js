// Fleet page: every drone on a plan and in a table (`GET /api/drones`,
// polled every second), deliveries per stage and throughput of the whole
// cluster (`GET /api/fleet`, polled every two seconds), whichever engine
// serves the page. With authentication on, a token without the Dispatcher
// or Operator role gets the drones without the deliveries they carry: the
// page shows that they are busy, not with what.

import { api, count, coords, el, isBusy, label, poll, problemText, setText, trackUrl } from "./common.js";
import { Plan } from "./plan.js";
import { session } from "./session.js";

const $ = (id) => document.getElementById(id);
const plan = new Plan($("plan"), { minSpanM: 3000, maxAspect: 1.0, minAspect: 0.5, pad: 1.1 });
const STATUSES = ["Available", "HeadedToPickup", "HeadedToDropoff", "Returning"];
const RATE_WINDOW_MS = 10_000;

/** Table rows by drone id, kept across refreshes so focus and scroll stay put. */
const rows = new Map();
let drones = [];
let area = null;
const samples = [];

// --------------------------------------------------------------- drones

async function refreshDrones() {
  const res = await api("/api/drones");
  if (!res.ok) {
    setText($("fleet-error"), `The drone list is unavailable: ${problemText(res)}`);
    return;
  }
  setText($("fleet-error"), "");
  drones = res.body.drones;
  area = res.body.area;
  renderPlan();
  renderTable();
  const by = (s) => drones.filter((d) => d.status === s).length;
  setText($("count-pickup"), count(by("HeadedToPickup")));
  setText($("count-dropoff"), count(by("HeadedToDropoff")));
  const busy = drones.filter(isBusy).length;
  setText($("drone-count"), `(${count(drones.length)}, ${count(busy)} on a delivery)`);
  setText(
    $("plan-text"),
    `${drones.length} drones: ${STATUSES.map((s) => `${by(s)} ${label(s).toLowerCase()}`).join(", ")}.`,
  );
}

const depotKey = (loc) => `${loc.latitude.toFixed(5)},${loc.longitude.toFixed(5)}`;

/** The service area's corners: the frame of the plan. */
function corners() {
  if (!area) return [];
  return [
    { latitude: area.south, longitude: area.west },
    { latitude: area.north, longitude: area.east },
  ];
}

function renderPlan() {
  if (drones.length === 0 && !area) return;
  const points = [...corners(), ...drones.flatMap((d) => [d.position, d.depot])];
  const refit = plan.ensure(points);
  if (refit || plan.layers.pins.childElementCount === 0) {
    const frame = [];
    const [sw, ne] = corners();
    if (sw) {
      const a = plan.xy(sw);
      const b = plan.xy(ne);
      frame.push(
        el(
          "rect",
          { class: "area", x: a.x, y: b.y, width: b.x - a.x, height: a.y - b.y },
          el("title", { text: `Service area ${coords(sw)} to ${coords(ne)}` }),
        ),
      );
    }
    const depots = new Map(drones.map((d) => [depotKey(d.depot), d.depot]));
    plan.layers.pins.replaceChildren(
      ...frame,
      ...[...depots.values()].map((loc) => {
        const { x, y } = plan.xy(loc);
        return el("rect", { class: "depot", x: x - 13, y: y - 13, width: 26, height: 26, rx: 3 }, el("title", { text: `Depot at ${coords(loc)}` }));
      }),
    );
  }
  const headings = drones
    .filter((d) => d.target && d.status !== "Available")
    .map((d) => {
      const a = plan.xy(d.position);
      const b = plan.xy(d.target);
      return el("line", { class: "heading", x1: a.x, y1: a.y, x2: b.x, y2: b.y });
    });
  plan.layers.routes.replaceChildren(...headings);
  for (const d of drones) {
    plan.marker(d.id, d.position, {
      status: d.status,
      title: `${d.id}${d.payload ? ` (${d.payload.class.toLowerCase()}, up to ${d.payload.maxWeightKg} kg)` : ""}: ${label(d.status).toLowerCase()}, battery ${d.batteryPercent} %${d.deliveryId ? `, delivery ${d.deliveryId}` : ""}`,
    });
  }
  plan.prune(new Set(drones.map((d) => d.id)));
}

function batteryCell(percent) {
  const level = percent < 20 ? "low" : percent < 50 ? "mid" : "ok";
  const fill = el("span", { class: "fill", dataset: { level } });
  fill.style.width = `${percent}%`;
  return [el("span", { class: "bar", "aria-hidden": "true" }, fill), el("span", { text: `${percent} %` })];
}

function row(d) {
  let r = rows.get(d.id);
  if (!r) {
    const cells = {
      status: el("td"),
      battery: el("td"),
      delivery: el("td", { class: "mono" }),
      position: el("td", { class: "hide-narrow" }),
      flown: el("td", { class: "num hide-narrow" }),
    };
    const tr = el("tr", { dataset: { drone: d.id } }, el("th", { scope: "row", class: "mono", text: d.id }), ...Object.values(cells));
    r = { tr, cells, last: {} };
    rows.set(d.id, r);
    $("drones").tBodies[0].append(tr);
  }
  return r;
}

function renderTable() {
  const busyOnly = $("busy-only").checked;
  for (const d of drones) {
    const r = row(d);
    const { cells, last } = r;
    if (last.status !== d.status) {
      cells.status.replaceChildren(el("span", { class: "badge", dataset: { status: d.status }, text: label(d.status) }));
    }
    if (last.battery !== d.batteryPercent) {
      cells.battery.replaceChildren(el("div", { class: "battery" }, ...batteryCell(d.batteryPercent)));
    }
    const shown = d.deliveryId ?? (isBusy(d) ? "hidden" : null);
    if (last.delivery !== shown) {
      let cell = "—";
      if (d.deliveryId) {
        cell = el("a", {
          href: trackUrl(d.deliveryId),
          "aria-label": `Track delivery ${d.deliveryId}`,
          title: d.deliveryId,
          text: `${d.deliveryId.slice(0, 8)}…`,
        });
      } else if (shown) {
        cell = el("span", { class: "note", dataset: { hidden: "delivery" }, text: "not shown" });
      }
      cells.delivery.replaceChildren(cell);
    }
    setText(cells.position, coords(d.position));
    setText(cells.flown, `${count(d.flownM / 1000, 1)} km`);
    r.last = { status: d.status, battery: d.batteryPercent, delivery: shown };
    r.tr.hidden = busyOnly && !isBusy(d);
  }
  const ids = new Set(drones.map((d) => d.id));
  for (const [id, r] of rows) {
    if (!ids.has(id)) {
      r.tr.remove();
      rows.delete(id);
    }
  }
}

$("busy-only").addEventListener("change", renderTable);

// -------------------------------------------------------------- metrics

/** Per second over the window, or `null` until there are two samples a second apart. */
function rate(key) {
  if (samples.length < 2) return null;
  const first = samples[0];
  const last = samples[samples.length - 1];
  const seconds = (last.t - first.t) / 1000;
  if (seconds < 1 || first[key] === null || last[key] === null) return null;
  return Math.max(0, (last[key] - first[key]) / seconds);
}

async function refreshFigures() {
  const res = await api("/api/fleet");
  if (!res.ok) {
    setText($("fleet-error"), `The cluster's figures are unavailable: ${problemText(res)}`);
    return;
  }
  const f = res.body;
  setText($("count-waiting"), count(f.waitingForDrone));
  setText($("count-at-risk"), count(f.atRisk ?? 0));
  setText($("count-completed"), count(f.counts.completed));
  setText($("count-cancelled"), count(f.counts.cancelled));
  setText($("queue-depth"), count(f.queueDepth));
  setText($("dead-letters"), count(f.deadLetters));
  const now = performance.now();
  samples.push({ t: now, accepted: f.counts.accepted, completed: f.counts.completed });
  while (samples.length > 2 && now - samples[1].t >= RATE_WINDOW_MS) samples.shift();
  const fmt = (v) => (v === null ? "measuring…" : count(v, v < 10 ? 1 : 0));
  setText($("rate-accepted"), fmt(rate("accepted")));
  setText($("rate-completed"), fmt(rate("completed")));
}

const me = await session();
$("fleet-scope").hidden = !me || me.readsEveryDelivery;
poll(refreshDrones, 1000);
poll(refreshFigures, 2000);
