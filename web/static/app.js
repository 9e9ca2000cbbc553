// tokend's pages work without this file. With it, the secret of a new
// token gets a copy button, and typing a custom expiry date selects it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
	for (const button of document.querySelectorAll("button[data-copy]")) {
		const source = document.getElementById(button.dataset.copy);
		const status = document.getElementById("copied");
		button.hidden = false;
		button.addEventListener("click", async () => {
			try {
				await navigator.clipboard.writeText(source.textContent.trim());
			} catch {
				// Without the clipboard API (plain HTTP on another host), select
				// the text so that one keystroke copies it.
				getSelection().selectAllChildren(source);
				if (status) status.textContent = "Press Ctrl+C (⌘C) to copy.";
				return;
			}
			button.textContent = "Copied";
			if (status) status.textContent = "The token is on your clipboard.";
			setTimeout(() => { button.textContent = "Copy"; }, 2500);
		});
	}

	const date = document.querySelector("input[name=expiry_date]");
	const custom = document.querySelector("input[name=expiry][value=custom]");
	if (date && custom) {
		date.addEventListener("input", () => { if (date.value) custom.checked = true; });
		for (const radio of document.querySelectorAll("input[name=expiry]")) {
			radio.addEventListener("change", () => { if (radio !== custom) date.value = ""; });
		}
	}
});
