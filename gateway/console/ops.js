// Operations page, over the admin API (`/admin`, bearer token): the
// cluster (every live engine, its role, readiness and the partitions it
// holds), the supervision tree of the engine chosen there (any engine,
// reached through the one serving this page) with a restart button per
// supervisor (confirmed in a dialog first), and dead letters with replay. The token is typed in and
// kept in `sessionStorage`: this tab only, gone when it closes. With
// authentication on, an access token with the Operator role, signed in
// from the header, does as well: the static admin token stays for
// break-glass.

import { api, apiToken, count, el, poll, problemText, setText, trackUrl } from "./common.js";
import { session } from "./session.js";

const $ = (id) => document.getElementById(id);
const TOKEN_KEY = "dronedelivery.adminToken";
const PAGE = 10;
/** Where each supervisor hangs in the tree (the engine lists parents first). */
const PARENTS = { fleet: "root", deliveries: "root", consumers: "root", workflow: "consumers" };
const SUPERVISES = {
  root: "ownership, fleet, deliveries and consumers",
  fleet: "the scheduler's drone actors",
  deliveries: "one actor per live delivery",
  consumers: "the queue pump and the workflow pool",
  workflow: "the workflow workers",
};

let token = sessionStorage.getItem(TOKEN_KEY);
/** Whether the signed-in access token (Operator role) is used for `/admin`, for want of an admin token. */
let useAccessToken = false;
let stopPolling = null;
let offset = 0;
let total = 0;
let treeShape = "";
let clusterShape = "";
let letterShape = "";
/** The engine serving this page, and the one whose tree is shown. */
let here = null;
let chosen = null;
const nodes = new Map();

const status = $("ops-status");

function say(text, kind = "") {
  status.className = `message sticky-status ${kind}`.trim();
  setText(status, text);
}

/** The bearer `/admin` calls carry: the admin token, else an operator's access token. */
const credential = () => token ?? (useAccessToken ? apiToken() : null);

function admin(path, method = "GET") {
  return api(path, { method, token: credential() });
}

/** `path` for the chosen engine (`?engine=` unless it is this one). */
function onChosen(path) {
  if (!chosen || chosen === here) return path;
  return `${path}${path.includes("?") ? "&" : "?"}engine=${encodeURIComponent(chosen)}`;
}

// ---------------------------------------------------------------- token

function signedOut(message) {
  token = null;
  useAccessToken = false;
  sessionStorage.removeItem(TOKEN_KEY);
  stopPolling?.();
  stopPolling = null;
  $("admin").hidden = true;
  $("forget").hidden = true;
  const state = $("auth-state");
  state.className = message ? "message error" : "message";
  setText(state, message ?? "");
}

/** Handles an answer that is not a success; true when it was about the token. */
function authProblem(res) {
  if (res.status === 401 || res.status === 403) {
    const which = token ? "this token" : "the access token you are signed in with";
    signedOut(`The engine refused ${which} (HTTP ${res.status}). Type the admin token it was started with.`);
    $("token").focus();
    return true;
  }
  if (res.status === 404 && res.body?.detail?.startsWith("no resource at")) {
    signedOut("The admin API is disabled on this engine: start it with --admin-token (or DD_ADMIN_TOKEN).");
    return true;
  }
  return false;
}

$("token-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const value = $("token").value.trim();
  if (!value) {
    signedOut("Type the admin token first.");
    $("token").focus();
    return;
  }
  token = value;
  sessionStorage.setItem(TOKEN_KEY, token);
  $("token").value = "";
  await start();
});

$("forget").addEventListener("click", () => {
  signedOut();
  say("The token is forgotten.");
  $("token").focus();
});

async function start() {
  const state = $("auth-state");
  state.className = "message";
  setText(state, "Checking the token…");
  let res;
  try {
    res = await admin("/admin/supervisors");
  } catch (e) {
    setText(state, `The engine could not be reached (${e.message}).`);
    return;
  }
  if (!res.ok) {
    if (!authProblem(res)) setText(state, `The admin API answered ${problemText(res)}.`);
    return;
  }
  state.className = "message ok";
  setText(state, token ? "Signed in for this tab." : "Using your access token (Operator role) for this tab.");
  $("forget").hidden = !token;
  $("admin").hidden = false;
  here = res.body.engine ?? null;
  const cluster = await admin("/admin/cluster");
  if (cluster.ok) renderCluster(cluster.body);
  if (chosen === here) renderTree(res.body.supervisors);
  else await refreshTree();
  stopPolling?.();
  stopPolling = poll(refresh, 3000);
}

async function refreshTree() {
  const tree = await admin(onChosen("/admin/supervisors"));
  if (tree.ok) renderTree(tree.body.supervisors);
  else if (!authProblem(tree)) say(`The tree of ${chosen} is unavailable: ${problemText(tree)}`, "error");
  return tree;
}

async function refresh() {
  if (!credential()) return;
  const [tree, letters, cluster] = await Promise.all([
    admin(onChosen("/admin/supervisors")),
    admin(`/admin/deadletters?offset=${offset}&limit=${PAGE}`),
    admin("/admin/cluster"),
  ]);
  if (tree.ok) renderTree(tree.body.supervisors);
  else if (authProblem(tree)) return;
  else say(`The tree of ${chosen} is unavailable: ${problemText(tree)}`, "error");
  if (cluster.ok) renderCluster(cluster.body);
  else if (!authProblem(cluster)) say(`The cluster view is unavailable: ${problemText(cluster)}`, "error");
  if (letters.ok) renderLetters(letters.body);
  else if (!authProblem(letters)) say(`Dead letters are unavailable: ${problemText(letters)}`, "error");
}

// --------------------------------------------------------------- confirm

const dialog = $("confirm");

/** Shows the confirm dialog; resolves to true when the operator confirms. */
function confirmAction(title, text, ok) {
  setText($("confirm-title"), title);
  setText($("confirm-text"), text);
  setText($("confirm-ok"), ok);
  dialog.returnValue = "";
  return new Promise((resolve) => {
    dialog.addEventListener("close", () => resolve(dialog.returnValue === "confirm"), { once: true });
    dialog.showModal();
    $("confirm-cancel").focus();
  });
}

// --------------------------------------------------------------- cluster

/** Partition numbers as ranges: [0,1,2,5] → "0–2, 5". */
function ranges(numbers) {
  const out = [];
  for (const n of numbers) {
    const last = out[out.length - 1];
    if (last && last[1] === n - 1) last[1] = n;
    else out.push([n, n]);
  }
  return out.map(([a, b]) => (a === b ? `${a}` : `${a}–${b}`)).join(", ");
}

function renderCluster(view) {
  here = view.engineId;
  const members = view.members ?? [];
  // Partitions by live holder, from the leases (the cards may lag a second).
  const held = new Map(members.map((m) => [m.id, []]));
  for (const e of view.engines) if (!held.has(e)) held.set(e, []);
  let free = 0;
  view.leases.forEach((lease, partition) => {
    if (lease?.live && held.has(lease.owner)) held.get(lease.owner).push(partition);
    else free += 1;
  });
  const card = new Map(members.map((m) => [m.id, m]));
  // The tree shown: the one chosen, while it lives; else this engine, or a
  // worker when this one runs no actors (a gateway).
  if (!chosen || !held.has(chosen)) {
    const self = card.get(here);
    chosen = self?.role === "gateway" ? (members.find((m) => m.role !== "gateway")?.id ?? here) : here;
    treeShape = "";
  }
  const n = held.size;
  const summary = `(${count(n)} ${n === 1 ? "engine" : "engines"}, ${count(view.leases.length)} partitions${free ? `, ${count(free)} without a live holder` : ""})`;
  const shape = `${summary}|${chosen}|${[...held].map(([e, ps]) => `${e}:${ps.join(".")}:${card.get(e)?.ready}:${card.get(e)?.dronesFlying}`).join(",")}`;
  if (shape === clusterShape) return;
  clusterShape = shape;
  setText($("cluster-summary"), summary);
  const self = card.get(chosen);
  setText($("tree-engine"), `of ${chosen}${self ? ` (${self.role})` : ""}${chosen === here ? ", this engine" : ""}`);
  $("engines").tBodies[0].replaceChildren(
    ...[...held].map(([engine, partitions]) => {
      const m = card.get(engine);
      const show = el(
        "button",
        { type: "button", class: "small secondary", "data-engine-tree": engine, "aria-pressed": String(engine === chosen) },
        engine === chosen ? "Shown" : "Show tree",
        el("span", { class: "visually-hidden", text: ` of ${engine}` }),
      );
      show.addEventListener("click", async () => {
        chosen = engine;
        treeShape = "";
        clusterShape = "";
        renderCluster(view);
        await refreshTree();
      });
      return el(
        "tr",
        { "data-engine": engine },
        el(
          "th",
          { scope: "row" },
          el("span", { class: "mono id", text: engine }),
          engine === here ? el("span", { class: "note", text: " (this engine)" }) : null,
        ),
        el("td", { class: "num", text: count(partitions.length) }),
        el("td", { class: "mono", text: ranges(partitions) || "none" }),
        el("td", { text: m?.role ?? "unknown" }),
        el("td", { text: m ? (m.ready ? "ready" : `not ready: ${m.notReady ?? "unknown"}`) : "unknown" }),
        el("td", { class: "num", text: m ? count(m.dronesFlying) : "—" }),
        el("td", { class: "mono", text: m?.version ?? "—" }),
        el("td", {}, show),
      );
    }),
  );
}

// ------------------------------------------------------------------ tree

function field(name, dt, cls) {
  const dd = el("dd", { "data-field": name });
  return { div: el("div", { class: cls }, el("dt", { text: dt }), dd), dd };
}

function node(s) {
  const fields = {
    strategy: field("strategy", "Strategy"),
    children: field("children", "Children"),
    restarts: field("restarts", "Restarts"),
    lastFailure: field("lastFailure", "Last failure", "failure"),
  };
  const badge = el("span", { class: "badge" });
  const button = el(
    "button",
    { type: "button", class: "small secondary", "data-restart": s.name },
    "Restart",
    el("span", { class: "visually-hidden", text: ` ${s.name}` }),
  );
  button.addEventListener("click", () => restart(s.name, button));
  const children = el("ul");
  const li = el(
    "li",
    { "data-supervisor": s.name },
    el(
      "div",
      { class: "node" },
      el(
        "div",
        {},
        el("div", { class: "node-head" }, el("h3", { class: "mono", text: s.name }), badge),
        SUPERVISES[s.name] ? el("span", { class: "note", text: `Supervises ${SUPERVISES[s.name]}.` }) : null,
      ),
      button,
      el("dl", {}, ...Object.values(fields).map((f) => f.div)),
    ),
    children,
  );
  return { li, badge, children, fields, button };
}

function renderTree(list) {
  const shape = list.map((s) => s.name).join(",");
  if (shape !== treeShape) {
    treeShape = shape;
    nodes.clear();
    const roots = [];
    for (const s of list) {
      const n = node(s);
      nodes.set(s.name, n);
      const parent = nodes.get(PARENTS[s.name] ?? "root");
      if (parent && parent !== n) parent.children.append(n.li);
      else roots.push(n.li);
    }
    $("tree").replaceChildren(...roots);
    for (const n of nodes.values()) n.children.hidden = n.children.childElementCount === 0;
  }
  for (const s of list) {
    const n = nodes.get(s.name);
    if (!n) continue;
    n.badge.dataset.status = s.status;
    setText(n.badge, s.status);
    setText(n.fields.strategy.dd, s.strategy.replaceAll("_", "-"));
    setText(n.fields.children.dd, count(s.children));
    setText(n.fields.restarts.dd, count(s.restarts));
    setText(n.fields.lastFailure.dd, s.lastFailure ?? "none");
  }
}

async function restart(name, button) {
  const where = chosen === here ? "this engine" : `engine ${chosen}`;
  const ok = await confirmAction(
    `Restart ${name}?`,
    `This stops ${name} on ${where} and everything under it gracefully (work in progress is drained or goes back to the queue) and starts it again.`,
    `Restart ${name}`,
  );
  if (!ok) {
    button.focus();
    return;
  }
  button.disabled = true;
  say(`Restarting ${name}…`);
  try {
    const res = await admin(onChosen(`/admin/supervisors/${encodeURIComponent(name)}/restart`), "POST");
    if (res.ok) {
      say(`${name} restarted on ${where} (${res.body.status}); restarts so far: ${count(res.body.restarts)}.`, "ok");
      await refresh();
    } else if (!authProblem(res)) {
      say(`Could not restart ${name} on ${where}: ${problemText(res)}`, "error");
    }
  } catch (e) {
    say(`Could not restart ${name}: ${e.message}`, "error");
  }
  button.disabled = false;
  if (button.isConnected) button.focus();
}

// ---------------------------------------------------------- dead letters

/** The delivery a queued message is about, when its body names one. */
function deliveryOf(message) {
  try {
    const body = JSON.parse(message?.body ?? "null");
    if (typeof body === "string") return body;
    return typeof body?.deliveryId === "string" ? body.deliveryId : null;
  } catch {
    return null;
  }
}

function renderLetters(page) {
  total = page.total;
  const items = page.items;
  if (items.length === 0 && offset > 0 && total > 0) {
    offset = Math.max(0, offset - PAGE);
    return;
  }
  setText($("dl-total"), `(${count(total)})`);
  $("dl-empty").hidden = total > 0;
  $("dead-letters").hidden = total === 0;
  $("dl-pager").hidden = total <= PAGE && offset === 0;
  setText($("dl-page"), total === 0 ? "" : `${offset + 1}–${offset + items.length} of ${count(total)}`);
  $("dl-prev").disabled = offset === 0;
  $("dl-next").disabled = offset + items.length >= total;
  const shape = items.map((d) => `${d.id}:${d.attempts}:${d.lastSeen}`).join(",");
  if (shape === letterShape) return;
  letterShape = shape;
  $("dead-letters").tBodies[0].replaceChildren(
    ...items.map((d) => {
      const button = el(
        "button",
        { type: "button", class: "small", "data-replay": d.id },
        "Replay",
        el("span", { class: "visually-hidden", text: ` message ${d.id}` }),
      );
      button.addEventListener("click", () => replay(d, button));
      return el(
        "tr",
        { "data-letter": d.id },
        el(
          "th",
          { scope: "row" },
          el("span", { class: "mono id", text: d.id }),
          deliveryOf(d.message) ? el("a", { class: "small-link", href: trackUrl(deliveryOf(d.message)), text: "track the delivery" }) : null,
        ),
        el("td", { text: d.message?.operation ?? "—" }),
        el("td", { text: d.reason }),
        el("td", { class: "num", text: count(d.attempts) }),
        el("td", { text: new Date(d.lastSeen).toLocaleString() }),
        el("td", {}, button),
      );
    }),
  );
}

async function replay(letter, button) {
  const ok = await confirmAction(
    "Replay this message?",
    `Message ${letter.id} (${letter.message?.operation ?? "unknown operation"}) goes back on the queue under the same id. If it fails again, it is dead-lettered again.`,
    "Replay",
  );
  if (!ok) {
    button.focus();
    return;
  }
  button.disabled = true;
  try {
    const res = await admin(`/admin/deadletters/${encodeURIComponent(letter.id)}/replay`, "POST");
    if (res.status === 202) {
      say(`Message ${letter.id} is back on the queue (${res.body.operation}).`, "ok");
      letterShape = "";
      await refresh();
    } else if (!authProblem(res)) {
      say(`Could not replay ${letter.id}: ${problemText(res)}`, "error");
      button.disabled = false;
    }
  } catch (e) {
    say(`Could not replay ${letter.id}: ${e.message}`, "error");
    button.disabled = false;
  }
}

$("dl-prev").addEventListener("click", () => {
  offset = Math.max(0, offset - PAGE);
  refresh();
});
$("dl-next").addEventListener("click", () => {
  if (offset + PAGE < total) offset += PAGE;
  refresh();
});

const me = await session({ ask: false });
if (token) start();
else if (me?.authentication === "jwt" && me.operates && apiToken()) {
  useAccessToken = true;
  start();
} else if (me?.authentication === "jwt") {
  setText($("auth-state"), "The token you are signed in with has no Operator role: type the admin token to use this page.");
}
