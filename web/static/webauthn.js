// WebAuthn ceremonies for the login's second step and the enrolment page (no inline script:
// the pages load this file). The server's options are JSON with base64url byte fields.
"use strict";
(function () {
  function fromB64url(text) {
    const b64 = text.replace(/-/g, "+").replace(/_/g, "/");
    const bin = atob(b64 + "===".slice((b64.length + 3) % 4));
    const bytes = new Uint8Array(bin.length);
    for (let i = 0; i < bin.length; i++) bytes[i] = bin.charCodeAt(i);
    return bytes.buffer;
  }
  function toB64url(buffer) {
    const bytes = new Uint8Array(buffer);
    let bin = "";
    for (let i = 0; i < bytes.length; i++) bin += String.fromCharCode(bytes[i]);
    return btoa(bin).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
  }
  function csrf() {
    const meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.content : "";
  }
  function showError(message) {
    const box = document.getElementById("webauthn-error");
    if (box) { box.textContent = message; box.hidden = false; }
  }
  async function post(url, body) {
    const headers = { "Content-Type": "application/json" };
    if (csrf()) headers["X-CSRF-Token"] = csrf();
    const response = await fetch(url, {
      method: "POST", headers: headers, credentials: "same-origin",
      body: body === undefined ? "{}" : JSON.stringify(body),
    });
    const data = await response.json().catch(function () { return {}; });
    if (!response.ok) {
      throw new Error((data.error && data.error.message) || ("HTTP " + response.status));
    }
    return data;
  }
  function descriptors(list) {
    return (list || []).map(function (d) { return Object.assign({}, d, { id: fromB64url(d.id) }); });
  }
  function serialise(credential) {
    const r = credential.response;
    const out = {
      id: credential.id, rawId: toB64url(credential.rawId), type: credential.type,
      clientExtensionResults: credential.getClientExtensionResults(), response: {
        clientDataJSON: toB64url(r.clientDataJSON),
      },
    };
    if (r.attestationObject) {
      out.response.attestationObject = toB64url(r.attestationObject);
      if (r.getTransports) out.response.transports = r.getTransports();
    } else {
      out.response.authenticatorData = toB64url(r.authenticatorData);
      out.response.signature = toB64url(r.signature);
      out.response.userHandle = r.userHandle ? toB64url(r.userHandle) : null;
    }
    return out;
  }
  async function login() {
    try {
      const options = await post("/login/webauthn/options");
      options.challenge = fromB64url(options.challenge);
      options.allowCredentials = descriptors(options.allowCredentials);
      const credential = await navigator.credentials.get({ publicKey: options });
      const done = await post("/login/webauthn", serialise(credential));
      window.location.assign(done.redirect || "/");
    } catch (error) {
      showError("Security key: " + error.message);
    }
  }
  async function register() {
    const nameBox = document.getElementById("webauthn-name");
    try {
      const options = await post("/mfa/webauthn/options");
      options.challenge = fromB64url(options.challenge);
      options.user.id = fromB64url(options.user.id);
      options.excludeCredentials = descriptors(options.excludeCredentials);
      const credential = await navigator.credentials.create({ publicKey: options });
      const done = await post("/mfa/webauthn", {
        name: nameBox ? nameBox.value : "security key", credential: serialise(credential),
      });
      if (done.recovery_codes && done.recovery_codes.length) {
        document.getElementById("webauthn-code-list").textContent = done.recovery_codes.join("\n");
        document.getElementById("webauthn-codes").hidden = false;
      } else {
        window.location.assign("/security?notice=" + encodeURIComponent("Added " + done.name));
      }
    } catch (error) {
      showError("Security key: " + error.message);
    }
  }
  document.addEventListener("DOMContentLoaded", function () {
    const loginButton = document.getElementById("webauthn-login");
    if (loginButton) loginButton.addEventListener("click", login);
    const registerButton = document.getElementById("webauthn-register");
    if (registerButton) registerButton.addEventListener("click", register);
  });
})();
