// The API key for this browser tab, shared by /docs and /dashboard. A page is
// opened as `?api_key=<key>` when the server needs a key (the address bar
// cannot send a header); the key then moves to sessionStorage, which ends
// with the tab, and out of the address, history and bookmarks.
"use strict";

const apiKey = (() => {
  const store = "ringcast.apiKey";
  const url = new URL(location.href);
  if (url.searchParams.has("api_key")) {
    sessionStorage.setItem(store, url.searchParams.get("api_key"));
    url.searchParams.delete("api_key");
    history.replaceState(history.state, "", url);
  }
  const field = document.getElementById("api-key");
  const form = document.getElementById("key-form");
  const listeners = [];
  const get = () => sessionStorage.getItem(store) || "";
  field.value = get();
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const key = field.value.trim();
    if (key) {
      sessionStorage.setItem(store, key);
    } else {
      sessionStorage.removeItem(store);
    }
    listeners.forEach((listener) => listener());
  });
  // The other page needs the key too: a link to it carries the key, which
  // that page moves out of its address in turn.
  for (const link of document.querySelectorAll("nav a")) {
    link.addEventListener("click", () => {
      const target = new URL(link.href);
      target.searchParams.delete("api_key");
      if (get()) {
        target.searchParams.set("api_key", get());
      }
      link.href = target;
    });
  }
  return {
    get,
    /** The headers that authenticate a REST request, none without a key. */
    headers: () => (get() ? { "X-API-Key": get() } : {}),
    /** Calls `listener` after the user enters another key. */
    onChange: (listener) => listeners.push(listener),
  };
})();
