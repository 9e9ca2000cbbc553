// Passkeys. A form marked data-passkey asks tokend for the options of a
// ceremony (its data-options URL, sent the form's fields), has the browser
// ask the authenticator, puts the answer into the form's field credential,
// and sends the form. A sudo field marked data-passkey-sudo confirms the
// session with a passkey and takes the sudo fields out of the page. The
// server keeps every ceremony's state; this file only carries bytes.
"use strict";

(() => {
	const decode = (s) => {
		const b = atob(s.replace(/-/g, "+").replace(/_/g, "/"));
		return Uint8Array.from(b, (c) => c.charCodeAt(0)).buffer;
	};
	const encode = (buf) => {
		let s = "";
		for (const byte of new Uint8Array(buf)) s += String.fromCharCode(byte);
		return btoa(s).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
	};

	// publicKey turns the options as JSON into what navigator.credentials wants.
	const publicKey = (options) => {
		const pk = options.publicKey;
		pk.challenge = decode(pk.challenge);
		if (pk.user) pk.user.id = decode(pk.user.id);
		for (const c of pk.excludeCredentials || []) c.id = decode(c.id);
		for (const c of pk.allowCredentials || []) c.id = decode(c.id);
		return pk;
	};

	// answer turns the authenticator's answer into JSON for the server.
	const answer = (cred) => {
		const r = cred.response;
		const response = { clientDataJSON: encode(r.clientDataJSON) };
		if (r.attestationObject) {
			response.attestationObject = encode(r.attestationObject);
			if (r.getTransports) response.transports = r.getTransports();
		} else {
			response.authenticatorData = encode(r.authenticatorData);
			response.signature = encode(r.signature);
			if (r.userHandle) response.userHandle = encode(r.userHandle);
		}
		return JSON.stringify({
			id: cred.id,
			rawId: encode(cred.rawId),
			type: cred.type,
			authenticatorAttachment: cred.authenticatorAttachment || undefined,
			clientExtensionResults: cred.getClientExtensionResults(),
			response,
		});
	};

	// post sends fields to url and returns the JSON answer; a problem
	// answer throws its detail.
	const post = async (url, fields) => {
		const res = await fetch(url, {
			method: "POST",
			headers: { "Content-Type": "application/x-www-form-urlencoded" },
			body: fields,
		});
		if (res.status === 204) return null;
		let body = {};
		try {
			body = await res.json();
		} catch {
			// not JSON: said below
		}
		if (!res.ok) throw new Error(body.detail || "tokend answered " + res.status + ": reload the page and try again");
		return body;
	};

	const say = (el, err) => {
		if (!el) return;
		el.textContent = err.name === "NotAllowedError" || err.name === "AbortError"
			? "The passkey request was cancelled or timed out. Try again."
			: err.message;
		el.hidden = false;
	};

	document.addEventListener("DOMContentLoaded", () => {
		if (!window.PublicKeyCredential || !navigator.credentials) return;

		for (const form of document.querySelectorAll("form[data-passkey]")) {
			const button = form.querySelector("[data-passkey-button]");
			const error = form.querySelector("[data-passkey-error]");
			if (button) button.hidden = false;
			form.addEventListener("submit", async (event) => {
				event.preventDefault();
				if (error) error.hidden = true;
				if (button) button.disabled = true;
				try {
					const fields = new URLSearchParams(new FormData(form));
					fields.delete("credential");
					const options = publicKey(await post(form.dataset.options, fields));
					const cred = form.dataset.passkey === "register"
						? await navigator.credentials.create({ publicKey: options })
						: await navigator.credentials.get({ publicKey: options });
					form.elements.credential.value = answer(cred);
					form.submit();
				} catch (err) {
					say(error, err);
					if (button) button.disabled = false;
				}
			});
		}

		for (const offer of document.querySelectorAll("[data-passkey-sudo]")) {
			const button = offer.querySelector("button");
			const status = offer.querySelector("[role=status]");
			offer.hidden = false;
			button.addEventListener("click", async () => {
				button.disabled = true;
				try {
					const options = publicKey(await post("/passkey/sudo-options", new URLSearchParams()));
					const cred = await navigator.credentials.get({ publicKey: options });
					await post("/passkey/sudo", new URLSearchParams({ credential: answer(cred) }));
					// The session may now do sensitive things: no form asks again.
					for (const field of document.querySelectorAll(".sudo, [data-passkey-sudo]")) {
						if (field !== offer) field.remove();
					}
					button.remove();
					status.textContent = "Confirmed with your passkey: go on.";
				} catch (err) {
					say(status, err);
					button.disabled = false;
				}
			});
		}
	});
})();
