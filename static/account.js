// The API tokens page (templates/account/tokens.html): the new token, shown once, selects
// itself whole when focused, and a Copy button (hidden without JavaScript) copies it.
"use strict";

document.addEventListener("DOMContentLoaded", () => {
  for (const field of document.querySelectorAll("[data-select-all]")) {
    field.addEventListener("focus", () => field.select());
  }
  for (const button of document.querySelectorAll("[data-copy]")) {
    const field = document.getElementById(button.dataset.copy);
    if (!field) continue;
    button.hidden = false;
    button.addEventListener("click", async () => {
      field.select();
      try {
        await navigator.clipboard.writeText(field.value);
      } catch {
        // No clipboard API (a page served over plain HTTP from another host): the old way.
        document.execCommand("copy");
      }
      button.textContent = "Copied";
    });
  }
});
