// Tracking page: one delivery, live. Reads the delivery (pickup and
// drop-off coordinates) and its status, then follows the server-sent event
// stream `/api/deliveries/{id}/events`: `stage` events build the timeline,
// `position` events move the drone and update the ETAs. The stream is read
// with `fetch` (`events.js`), not `EventSource`, so that it carries the
// signed-in token like every other call. Signed in as an owner, another
// owner's delivery is "not found", as the API answers.

import { api, clock, coords, countdown, dateTime, el, isTerminal, label, problemText, setText, STAGE_NAMES, STAGE_PATH } from "./common.js";
import { follow } from "./events.js";
import { Plan } from "./plan.js";
import { session } from "./session.js";

const id = decodeURIComponent(location.pathname.replace(/^\/console\/track\//, ""));
const path = `/api/deliveries/${encodeURIComponent(id)}`;
const params = new URLSearchParams(location.search);
/** Just sent from the home page: its queued request may take a moment to be processed. */
const justSent = params.has("new");
const NOT_FOUND_AFTER_MS = justSent ? 30_000 : 4_000;
const TRAIL_MAX = 400;

const $ = (id) => document.getElementById(id);
const plan = new Plan($("plan"), { maxAspect: 0.85, minAspect: 0.5 });

const state = {
  delivery: null,
  /** Current stage name. */
  stage: null,
  /** Stage events by position in the history: `{stage, at, location}`. */
  events: [],
  droneId: null,
  position: null,
  pickupEta: null,
  deliveryEta: null,
  /** The deadline when the request's names a time (from the status). */
  deadline: null,
  /** The booked pickup while the delivery is Scheduled (from the status). */
  scheduledFor: null,
  /** Why the delivery is at risk of missing its deadline, if it is. */
  atRisk: null,
  trail: [],
  stream: null,
  finished: false,
};

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

setText($("delivery-id"), id);
document.title = `Delivery ${id} · drone delivery console`;

// ------------------------------------------------------------ finding it

function show(section) {
  for (const name of ["looking", "not-found", "tracking"]) $(name).hidden = name !== section;
}

async function find() {
  const started = Date.now();
  let notFoundShown = false;
  for (;;) {
    let res;
    try {
      res = await api(path);
    } catch (e) {
      setText($("looking-text"), `The engine could not be reached (${e.message}); retrying…`);
      await sleep(2000);
      continue;
    }
    if (res.ok) return res.body;
    const waited = Date.now() - started;
    if (res.status === 404) {
      if (waited >= NOT_FOUND_AFTER_MS && !notFoundShown) {
        notFoundShown = true;
        setText($("not-found-id"), id);
        document.title = "Delivery not found · drone delivery console";
        show("not-found");
        const heading = $("not-found-heading");
        heading.tabIndex = -1;
        heading.focus();
      } else if (!notFoundShown) {
        setText($("looking-text"), justSent ? "Waiting for the engine to process the request…" : "Looking for this delivery…");
      }
      await sleep(notFoundShown ? 5000 : 400);
      continue;
    }
    if (res.status === 401) {
      // Signing in reloads the page; until then there is nothing to read.
      setText($("looking-text"), "This engine needs an access token: sign in to track this delivery.");
      await new Promise(() => {});
    }
    setText($("looking-text"), `The engine answered ${problemText(res)}; retrying…`);
    await sleep(2000);
  }
}

// -------------------------------------------------------------- drawing

function drawPlan() {
  const d = state.delivery;
  const points = [d.pickup, d.dropoff, state.position, ...state.trail.slice(0, 1)];
  plan.ensure(points);
  plan.pin("pickup", d.pickup, "P", "pin-pickup", `Pickup: ${coords(d.pickup)}`);
  plan.pin("dropoff", d.dropoff, "D", "pin-dropoff", `Drop-off: ${coords(d.dropoff)}`);
  const routes = plan.layers.routes;
  routes.replaceChildren();
  const a = plan.xy(d.pickup);
  const b = plan.xy(d.dropoff);
  routes.append(el("line", { class: "route", x1: a.x, y1: a.y, x2: b.x, y2: b.y }));
  if (state.trail.length > 1) {
    const pts = state.trail.map((p) => plan.xy(p)).map(({ x, y }) => `${x.toFixed(1)},${y.toFixed(1)}`);
    routes.append(el("polyline", { class: "trail", points: pts.join(" ") }));
  }
  if (state.position) {
    plan.marker("drone", state.position, {
      className: "me",
      radius: 11,
      title: `${state.droneId ?? "Drone"} at ${coords(state.position)}`,
    });
  }
  setText($("plan-text"), describe());
}

/** What the plan shows, in words. */
function describe() {
  const d = state.delivery;
  if (!state.position) return "Pickup and drop-off are marked; no drone is flying this delivery yet.";
  const stage = state.stage;
  const target = stage === "HeadedToDropoff" ? ["drop-off", d.dropoff] : ["pickup", d.pickup];
  if (isTerminal(stage)) return `The delivery is ${label(stage).toLowerCase()}; the drone's last position was ${coords(state.position)}.`;
  const km = (Plan.distance(state.position, target[1]) / 1000).toFixed(1);
  return `${state.droneId ?? "The drone"} is ${km} km from the ${target[0]}.`;
}

/** The stage events: the history without its at-risk marks. */
const stageEvents = () => state.events.filter((e) => e && !e.atRisk);

function renderTimeline() {
  const events = stageEvents();
  const current = state.stage;
  const items = events.map((e, i) => ({
    stage: e.stage,
    at: e.at,
    state: i === events.length - 1 && !isTerminal(e.stage) ? "current" : "done",
  }));
  if (items.length === 0 && current) items.push({ stage: current, at: null, state: isTerminal(current) ? "done" : "current" });
  const last = items.length ? items[items.length - 1].stage : "Created";
  if (!isTerminal(last)) {
    const from = last === "Rescheduled" ? 0 : last === "Scheduled" ? -1 : Math.max(0, STAGE_PATH.indexOf(last));
    for (const stage of STAGE_PATH.slice(from + 1)) items.push({ stage, at: null, state: "upcoming" });
  }
  $("timeline").replaceChildren(
    ...items.map((item) =>
      el(
        "li",
        { dataset: { state: item.state, stage: item.stage }, "aria-current": item.state === "current" ? "step" : null },
        el("span", { class: "label", text: label(item.stage) }),
        el("span", {
          class: "when",
          text: item.at ? clock(item.at) : item.state === "upcoming" ? "to come" : "",
        }),
      ),
    ),
  );
}

function setStage(stage) {
  if (!stage || stage === state.stage) return;
  state.stage = stage;
  const badge = $("stage");
  badge.dataset.stage = stage;
  setText(badge, label(stage));
  setText($("announce"), `Delivery stage: ${label(stage)}`);
}

function reachedAt(stage) {
  return stageEvents().findLast((e) => e.stage === stage)?.at ?? null;
}

/** ETAs and where the drone is, refreshed every second (the countdowns). */
function renderFacts() {
  const stage = state.stage;
  const pickedUp = reachedAt("HeadedToDropoff");
  let pickup;
  if (stage === "Cancelled") pickup = "cancelled";
  else if (pickedUp && stage !== "Rescheduled" && stage !== "HeadedToPickup") pickup = `picked up at ${clock(pickedUp)}`;
  else if (stage === "Scheduled" && state.scheduledFor) pickup = `booked for ${dateTime(state.scheduledFor)}`;
  else pickup = state.pickupEta ? countdown(state.pickupEta) : "once a drone is assigned";
  setText($("pickup-eta"), pickup);
  let delivery;
  if (stage === "Completed") delivery = `delivered at ${clock(reachedAt("Completed"))}`;
  else if (stage === "Cancelled") delivery = "cancelled";
  else delivery = state.deliveryEta ? countdown(state.deliveryEta) : "once a drone is assigned";
  setText($("delivery-eta"), delivery);
  setText($("deadline"), deadlineText());
  const risk = $("at-risk");
  risk.dataset.risk = state.atRisk ? "yes" : "no";
  setText(risk, state.atRisk ?? "no");
  setText($("drone-id"), state.droneId ?? "not assigned yet");
  setText($("drone-position"), state.position ? coords(state.position) : "—");
}

/** The deadline as a time, or as the client wrote it when it names none. */
function deadlineText() {
  if (state.deadline) return dateTime(state.deadline);
  const given = state.delivery?.deadline;
  return given ? `“${given}” (not a time)` : "none";
}

function live(what, text) {
  const node = $("live");
  node.dataset.state = what;
  setText(node, text);
}

// ---------------------------------------------------------------- data

function applyStatus(s) {
  setStage(s.stageName ?? STAGE_NAMES[s.stage]);
  state.droneId = s.droneId ?? state.droneId;
  state.pickupEta = s.pickupETA ?? state.pickupEta;
  state.deliveryEta = s.deliveryETA ?? state.deliveryEta;
  if ("deadline" in s) state.deadline = s.deadline;
  if ("scheduledFor" in s) state.scheduledFor = s.scheduledFor;
  if ("atRisk" in s) state.atRisk = s.atRisk ? s.atRiskReason ?? "at risk" : null;
  if (s.lastKnownLocation) move(s.lastKnownLocation);
}

function move(location) {
  const last = state.trail[state.trail.length - 1];
  if (!last || last.latitude !== location.latitude || last.longitude !== location.longitude) {
    state.trail.push(location);
    if (state.trail.length > TRAIL_MAX) state.trail.splice(1, 1);
  }
  state.position = location;
}

function onStage(event) {
  const data = JSON.parse(event.data);
  const index = Number(event.lastEventId) - 1;
  const stage = data.stageName ?? STAGE_NAMES[data.stage];
  state.events[Number.isInteger(index) && index >= 0 ? index : state.events.length] = {
    stage,
    at: data.at,
    location: data.location,
    atRisk: data.atRisk ?? null,
  };
  if (data.atRisk) state.atRisk = data.atRisk;
  const latest = state.events[state.events.length - 1];
  if (latest) setStage(latest.stage);
  if (data.location && isTerminal(stage)) move(data.location);
  renderTimeline();
  renderFacts();
  drawPlan();
  if (isTerminal(stage)) finish();
}

function onPosition(event) {
  const data = JSON.parse(event.data);
  if (data.stageName && !isTerminal(state.stage)) setStage(data.stageName);
  state.droneId = data.droneId ?? state.droneId;
  state.pickupEta = data.pickupETA ?? state.pickupEta;
  state.deliveryEta = data.deliveryETA ?? state.deliveryEta;
  if (data.location) move(data.location);
  renderFacts();
  drawPlan();
}

function connect() {
  if (state.finished) return;
  state.stream = follow(`${path}/events`, {
    onOpen: () => live("live", "live"),
    onEvent: (event) => {
      if (state.finished) return;
      if (event.type === "stage") onStage(event);
      else if (event.type === "position") onPosition(event);
    },
    onRetry: (why) => live("reconnecting", `connection lost (${why}); reconnecting…`),
    onStop: (res) => live("stopped", `not live: ${problemText(res)}`),
    onDone: () => finish(),
  });
}

async function finish() {
  if (state.finished) return;
  state.finished = true;
  state.stream?.close();
  live("finished", `finished: ${label(state.stage).toLowerCase()}`);
  try {
    const res = await api(`${path}/status`);
    if (res.ok) applyStatus(res.body);
  } catch {
    // The page already shows the end; the final status only refines it.
  }
  renderFacts();
  drawPlan();
}

async function main() {
  await session();
  const delivery = await find();
  if (justSent) history.replaceState(null, "", location.pathname);
  state.delivery = delivery;
  setText($("pickup-where"), coords(delivery.pickup));
  setText($("dropoff-where"), coords(delivery.dropoff));
  state.droneId = delivery.droneId;
  show("tracking");
  plan.fit([delivery.pickup, delivery.dropoff]);
  try {
    const res = await api(`${path}/status`);
    if (res.ok) applyStatus(res.body);
  } catch {
    // The stream below brings the same information.
  }
  renderTimeline();
  renderFacts();
  drawPlan();
  connect();
  setInterval(renderFacts, 1000);
}

main();
