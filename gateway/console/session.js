// Signing in: the access token every page sends to the API when the engine
// authenticates requests (`--auth-mode jwt`).
//
// Each page calls `session()` once. It asks the engine who the caller is
// (`GET /api/me`): with authentication off the header shows nothing and
// every page works as before; with it on, the header shows who is signed in
// (the owner and roles as the engine reads the token, not as the browser
// would guess) with a "Sign out" button, or a "Sign in" button that opens
// a dialog for the token. The token is checked with the engine before it
// is kept, and kept in `sessionStorage` only: this tab, gone when it
// closes, never in `localStorage` or a cookie. The pages then read with it
// and show what the engine lets it see (another owner's delivery is "not
// found", drones carry no delivery ids unless the token may see them).
//
// Signing in or out reloads the page, so everything on it is read again
// with the new identity. A token the API refuses later (it expired) is
// forgotten, and the dialog says why.

import { api, apiToken, el, problemText, REFUSED_EVENT, setText, TOKEN_KEY } from "./common.js";

let dialog = null;

function forget() {
  sessionStorage.removeItem(TOKEN_KEY);
}

/** The sign-in dialog, built once. */
function signInDialog() {
  if (dialog) return dialog;
  const input = el("input", {
    id: "session-token",
    name: "token",
    type: "password",
    autocomplete: "off",
    spellcheck: "false",
    required: true,
    "aria-describedby": "session-hint",
  });
  const error = el("p", { id: "session-error", class: "message error", role: "alert" });
  const submit = el("button", { type: "submit", id: "session-submit", text: "Sign in" });
  const form = el(
    "form",
    { id: "session-form" },
    el("h2", { id: "session-title", text: "Sign in" }),
    el(
      "p",
      { id: "session-hint", class: "note" },
      "This engine needs an access token: a JWT from its identity provider. It is kept for this " +
        "browser tab only and sent with each call to the API.",
    ),
    el("div", { class: "field" }, el("label", { for: "session-token", text: "Access token" }), input),
    error,
    el(
      "div",
      { class: "actions" },
      el("button", { type: "button", class: "secondary", id: "session-cancel", text: "Cancel", on: { click: () => dialog.close() } }),
      submit,
    ),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) {
      setText(error, "Paste the access token first.");
      input.focus();
      return;
    }
    submit.disabled = true;
    setText(error, "");
    try {
      const res = await api("/api/me", { token });
      if (res.ok) {
        sessionStorage.setItem(TOKEN_KEY, token);
        input.value = "";
        location.reload();
        return;
      }
      setText(error, res.status === 401 ? `The engine refused this token: ${problemText(res)}` : `The engine answered ${problemText(res)}.`);
    } catch (e) {
      setText(error, `The engine could not be reached (${e.message}).`);
    }
    submit.disabled = false;
    input.select();
  });
  dialog = el("dialog", { id: "session-dialog", "aria-labelledby": "session-title" }, form);
  document.body.append(dialog);
  return dialog;
}

/** Opens the sign-in dialog, saying `why` when there is a reason. */
export function askForToken(why = "") {
  const d = signInDialog();
  setText(d.querySelector("#session-error"), why);
  if (!d.open) d.showModal();
  d.querySelector("#session-token").focus();
}

/** The header's session area: who is signed in, or a sign-in button. */
function render(box, me) {
  box.hidden = false;
  if (me) {
    const roles = me.roles.length ? me.roles.join(", ") : "no roles";
    box.replaceChildren(
      el("span", { class: "who", id: "session-who", text: `${me.owner ?? "no owner"} · ${roles}` }),
      el("button", {
        type: "button",
        class: "small secondary",
        id: "sign-out",
        text: "Sign out",
        on: {
          click: () => {
            forget();
            location.reload();
          },
        },
      }),
    );
  } else {
    box.replaceChildren(
      el("button", { type: "button", class: "small", id: "sign-in", text: "Sign in", on: { click: () => askForToken() } }),
    );
  }
}

/**
 * Finds out who this tab is to the engine and shows it in the header
 * (`#session`). Resolves to the caller (`GET /api/me`): `{authentication:
 * "none", …}` with authentication off, the token's identity when signed
 * in, or `null` when the engine needs a token this tab does not have (or
 * cannot be asked). With `ask`, a missing or refused token opens the
 * sign-in dialog at once (pages that need the API for anything).
 */
export async function session({ ask = true } = {}) {
  const box = document.getElementById("session");
  document.addEventListener(REFUSED_EVENT, (event) => {
    forget();
    if (box) render(box, null);
    askForToken(`Signed out: the engine refused the token (${event.detail}). Sign in again.`);
  });
  let res;
  try {
    res = await api("/api/me");
  } catch {
    return null;
  }
  if (res.ok && res.body?.authentication === "none") {
    if (box) box.hidden = true;
    return res.body;
  }
  if (res.ok) {
    if (box) render(box, res.body);
    return res.body;
  }
  if (res.status !== 401) return null;
  // A refused stored token was announced (and forgotten) by `api`.
  if (box) render(box, null);
  if (ask && !apiToken() && !dialog?.open) askForToken();
  return null;
}
