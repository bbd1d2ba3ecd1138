// The console's home page: send the original system's example delivery
// request (editable), or go to the tracking page of a delivery id. Signed
// in (authentication on), the request is sent for the token's owner: the
// only owner it may create deliveries for.

import { api, el, isBusy, problemText, setText, trackUrl } from "./common.js";
import { session } from "./session.js";

const form = document.getElementById("send-form");
const sendButton = document.getElementById("send");
const result = document.getElementById("send-result");
const errors = document.getElementById("send-errors");
const preview = document.getElementById("request-preview");

const value = (id) => document.getElementById(id).value;

/** The request body, as the original's `deployment.md` example has it. */
function request() {
  const weight = Number(value("weight"));
  return {
    confirmationRequired: value("confirmation"),
    deadline: value("deadline"),
    dropOffLocation: value("dropoff"),
    expedited: document.getElementById("expedited").checked,
    ownerId: value("owner-id"),
    packageInfo: {
      packageId: value("package-id"),
      size: value("size"),
      tag: value("tag"),
      weight: value("weight").trim() === "" || Number.isNaN(weight) ? value("weight") : weight,
    },
    pickupLocation: value("pickup"),
    pickupTime: value("pickup-time"),
  };
}

function showPreview() {
  preview.textContent = JSON.stringify(request(), null, 2);
}

function fail(message, fieldErrors = []) {
  result.className = "message error";
  setText(result, message);
  errors.replaceChildren(...fieldErrors.map((e) => el("li", { text: `${e.field}: ${e.message}` })));
}

form.addEventListener("input", showPreview);
form.addEventListener("change", showPreview);

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  sendButton.disabled = true;
  errors.replaceChildren();
  result.className = "message";
  setText(result, "Sending…");
  try {
    const res = await api("/api/deliveryrequests", { method: "POST", body: request() });
    if (res.status === 202 && res.body && res.body.deliveryId) {
      const id = res.body.deliveryId;
      result.className = "message ok";
      setText(result, `Accepted: delivery ${id}. Opening its tracking page…`);
      location.assign(`${trackUrl(id)}?new=1`);
      return;
    }
    if (res.status === 429) {
      const wait = res.headers.get("retry-after") ?? "a few";
      fail(`Too many requests: try again in ${wait} s.`);
    } else {
      const fields = res.body && Array.isArray(res.body.errors) ? res.body.errors : [];
      if (fields.length > 0) document.getElementById("request-details").open = true;
      fail(`The request was refused: ${problemText(res)}`, fields);
    }
  } catch (e) {
    fail(`The engine could not be reached (${e.message}).`);
  }
  sendButton.disabled = false;
});

document.getElementById("track-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const id = value("track-id").trim();
  const error = document.getElementById("track-error");
  if (!id) {
    setText(error, "Type a delivery id first.");
    document.getElementById("track-id").focus();
    return;
  }
  setText(error, "");
  location.assign(trackUrl(id));
});

async function engine() {
  try {
    const ready = await api("/readyz");
    if (ready.ok) {
      setText(document.getElementById("engine-ready"), "ready");
      setText(document.getElementById("engine-role"), ready.body.role ?? "—");
    } else {
      setText(document.getElementById("engine-ready"), `not ready: ${problemText(ready)}`);
    }
    const drones = await api("/api/drones");
    if (drones.ok) {
      const list = drones.body.drones;
      const busy = list.filter(isBusy).length;
      setText(document.getElementById("engine-drones"), `${list.length} (${busy} on a delivery)`);
    }
  } catch (e) {
    setText(document.getElementById("engine-ready"), `unreachable (${e.message})`);
  }
}

showPreview();
const me = await session();
if (me?.authentication === "jwt" && me.owner) {
  document.getElementById("owner-id").value = me.owner;
  showPreview();
}
engine();
