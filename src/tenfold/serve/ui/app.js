// The chat page of `tenfold serve`: a streamed conversation on one sink-cache session (X-Session-Id), and what
// that cache still holds (GET /v1/sessions/{id}/cache). Talks only to this server's own public API.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;
  const state = {
    key: (store.getItem("tenfold-key") || "").replace(/[^\x21-\x7e]/g, ""),
    session: newSessionId(),  // the conversation lives in this page, so a reload starts a new session
    generation: 0,  // bumped by "New conversation": a late reply of an older conversation is dropped
    model: null,
    history: [],
    controller: null,
  };

  function newSessionId() {
    const id = "chat-" + (crypto.randomUUID ? crypto.randomUUID() : String(Date.now()) + Math.random());
    store.setItem("tenfold-session", id);
    return id;
  }

  function headers(extra) {
    const h = Object.assign({"Content-Type": "application/json", "X-Session-Id": state.session}, extra || {});
    if (state.key) h["Authorization"] = "Bearer " + state.key;
    return h;
  }

  function status(text, isError) {
    $("status").textContent = text || "";
    $("status").classList.toggle("error", !!isError);
  }

  async function errorText(response) {
    try {
      const body = await response.json();
      return (body.error && body.error.message) || response.statusText;
    } catch (e) {
      return response.status + " " + response.statusText;
    }
  }

  // -- the key -------------------------------------------------------------------------------------------
  function askForKey(message) {
    $("key-panel").hidden = false;
    $("key-error").textContent = message || "";
    $("key").focus();
  }

  async function connect() {
    const response = await fetch("/v1/models", {headers: headers()});
    if (response.status === 401) {
      askForKey(state.key ? "That key was refused: " + await errorText(response) : "");
      return false;
    }
    if (!response.ok) {
      status("cannot list the models: " + await errorText(response), true);
      return false;
    }
    const models = (await response.json()).data;
    state.model = models[0].id;
    $("model").textContent = state.model;
    $("key-panel").hidden = true;
    $("change-key").hidden = !state.key;
    await refreshCache();
    return true;
  }

  // The server's own rule for keys (printable ASCII without spaces); a pasted "Bearer KEY" is taken as KEY.
  function cleanKey(text) {
    const key = text.trim().replace(/^Bearer\s+/i, "");
    if (!key) return {error: "Enter the key."};
    if (!/^[\x21-\x7e]+$/.test(key)) return {error: "A key is printable ASCII without spaces (check for pasted quotes)."};
    return {key: key};
  }

  $("key-use").addEventListener("click", async () => {
    const {key, error} = cleanKey($("key").value);
    if (error) {
      $("key-error").textContent = error;
      return;
    }
    state.key = key;
    store.setItem("tenfold-key", key);
    await connect().catch((e) => askForKey("Cannot reach the server: " + (e.message || e)));
  });
  $("change-key").addEventListener("click", () => {
    state.key = "";
    store.removeItem("tenfold-key");
    $("key").value = "";
    askForKey("");
  });
  $("key").addEventListener("keydown", (e) => { if (e.key === "Enter") $("key-use").click(); });

  // -- messages ------------------------------------------------------------------------------------------
  function bubble(role, text) {
    const item = document.createElement("article");
    item.className = "msg " + role;
    const who = document.createElement("div");
    who.className = "who";
    const name = document.createElement("span");
    name.textContent = role === "user" ? "You" : "Assistant";
    who.appendChild(name);
    const body = document.createElement("div");
    body.className = "body";
    item.append(who, body);
    if (role === "assistant") {
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy";
      copy.textContent = "Copy";
      copy.addEventListener("click", () => copyText(item.dataset.text || "", copy));
      who.appendChild(copy);
    }
    setText(item, text);
    $("messages").appendChild(item);
    scrollDown(true);
    return item;
  }

  // Keep the newest text in view while it streams, unless the reader scrolled up to read something earlier.
  function scrollDown(force) {
    const box = $("messages");
    if (force || box.scrollHeight - box.scrollTop - box.clientHeight < 80) box.scrollTop = box.scrollHeight;
  }

  function setText(item, text) {
    item.dataset.text = text;
    const body = item.querySelector(".body");
    if (item.classList.contains("assistant")) window.renderMarkdown(text, body);
    else body.textContent = text;
  }

  async function copyText(text, button) {
    let done = false;
    if (navigator.clipboard && window.isSecureContext) {
      try {
        await navigator.clipboard.writeText(text);
        done = true;
      } catch (e) {
        done = false;
      }
    }
    if (!done) {  // plain http on a LAN address has no clipboard API: copy through a selected text field
      const field = document.createElement("textarea");
      field.value = text;
      field.setAttribute("readonly", "");
      field.className = "offscreen";
      document.body.appendChild(field);
      field.select();
      try { done = document.execCommand("copy"); } catch (e) { done = false; }
      field.remove();
    }
    button.textContent = done ? "Copied" : "Copy failed";
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  }

  function busy(on) {
    $("send").disabled = on;
    $("stop").disabled = !on;
    $("input").disabled = on;
  }

  // The settings as the API takes them, or an error line (nothing is sent with a setting the server would refuse).
  function settings() {
    const temperature = Number($("temperature").value), maxTokens = Number($("max-tokens").value);
    if ($("temperature").value.trim() === "" || !(temperature >= 0 && temperature <= 2)) {
      return {error: "Temperature must be a number from 0 to 2."};
    }
    if (!Number.isInteger(maxTokens) || maxTokens < 1) return {error: "Max tokens must be a whole number, 1 or more."};
    return {temperature: temperature, max_tokens: maxTokens};
  }

  const ENDINGS = {
    length: "stopped at max tokens",
    abort: "the server ended this answer early (it is shutting down); the answer is cut off",
  };

  async function send() {
    const text = $("input").value;
    if (!text.trim() || state.controller) return;
    const chosen = settings();
    if (chosen.error) {
      status(chosen.error, true);
      return;
    }
    const generation = state.generation;
    $("input").value = "";
    bubble("user", text);
    const answer = bubble("assistant", "");
    answer.classList.add("streaming");
    const system = $("system").value.trim();
    const turn = {role: "user", content: text};
    const messages = (system ? [{role: "system", content: system}] : []).concat(state.history, [turn]);
    const body = Object.assign({model: state.model, messages: messages, stream: true}, chosen);
    state.controller = new AbortController();
    busy(true);
    status("");
    const poll = setInterval(() => { if (state.history.length) refreshCache(true); }, 1000);  // live counters
    let reply = "", finish = null, failed = null;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
      });
      if (response.status === 401) {
        askForKey("The server refused the key: " + await errorText(response));
        throw new Error("the API key was refused");
      }
      if (!response.ok) throw new Error(await errorText(response));
      const reader = response.body.getReader();
      const decoder = new TextDecoder();
      let buffer = "";
      for (;;) {
        const {value, done} = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, {stream: true});
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ") || line === "data: [DONE]") continue;
            const data = JSON.parse(line.slice(6));
            if (data.error) throw new Error(data.error.message);
            for (const choice of data.choices || []) {
              reply += (choice.delta && choice.delta.content) || "";
              if (choice.finish_reason) finish = choice.finish_reason;
            }
          }
          if (generation === state.generation) {
            setText(answer, reply);
            scrollDown(false);
          }
        }
      }
    } catch (e) {
      failed = e.name === "AbortError" ? "stopped" : String(e.message || e);
    } finally {
      clearInterval(poll);
      answer.classList.remove("streaming");
      state.controller = null;
      busy(false);
    }
    if (generation !== state.generation) return;  // "New conversation" was chosen meanwhile: this reply is not in it
    if (reply) {
      state.history.push(turn, {role: "assistant", content: reply});
      status(failed === "stopped" ? "stopped" : failed ? "the answer was cut off: " + failed : ENDINGS[finish] || "",
             !!failed && failed !== "stopped");
    } else {
      // no answer: the turn leaves the conversation and its text goes back to the box, to edit or send again
      const asked = answer.previousElementSibling;
      answer.remove();
      if (asked) asked.remove();
      $("input").value = text;
      status(failed === "stopped" ? "stopped before any answer; your message is back in the box"
             : failed ? "not sent: " + failed : "the model gave an empty answer; your message is back in the box",
             !!failed && failed !== "stopped");
    }
    $("input").focus();
    await refreshCache();
  }

  $("send").addEventListener("click", send);
  $("stop").addEventListener("click", () => { if (state.controller) state.controller.abort(); });
  $("input").addEventListener("keydown", (e) => {
    if (e.key === "Enter" && !e.shiftKey && !e.isComposing) {
      e.preventDefault();
      send();
    }
  });
  $("new").addEventListener("click", async () => {
    state.generation += 1;
    if (state.controller) state.controller.abort();
    state.history = [];
    state.session = newSessionId();
    $("messages").replaceChildren();
    status("");
    await refreshCache();
  });

  // -- the cache -----------------------------------------------------------------------------------------
  const EVICTED_SHOWN = 160;  // characters of evicted text shown (its end)

  function show(counts) {
    $("c-seen").textContent = counts.tokens_seen;
    $("c-held").textContent = counts.in_cache;
    $("c-evicted").textContent = counts.evicted;
    $("c-fill").textContent = Math.round(100 * counts.fill) + " %";
    $("c-memory").textContent = (counts.memory_bytes / 1048576).toFixed(2) + " MiB";
    $("fillbar").style.width = Math.min(100, Math.round(100 * counts.fill)) + "%";
  }

  function emptyCache(note) {
    show({tokens_seen: 0, in_cache: 0, evicted: 0, fill: 0, memory_bytes: 0});
    $("tokens").replaceChildren();
    $("tokens").dataset.state = "empty";
    $("cache-note").textContent = note || "";
  }

  // After a turn, and every second while an answer streams (`live`: a missing session is then not news).
  async function refreshCache(live) {
    if (!state.history.length) return emptyCache("");
    let response = null;
    try {
      response = await fetch("/v1/sessions/" + encodeURIComponent(state.session) + "/cache", {headers: headers()});
    } catch (e) {
      $("cache-note").textContent = "cannot reach the server";
      return;
    }
    if (live && !response.ok) return;
    if (response.status === 404) {
      return emptyCache("The server holds no cache for this conversation now (a stopped answer resets it, idle " +
                        "sessions expire); the next message reads the conversation again.");
    }
    if (!response.ok) {
      $("cache-note").textContent = "cache state unavailable: " + await errorText(response);
      return;
    }
    const cache = await response.json();
    $("cache-note").textContent = "";
    show(cache);
    const tokens = $("tokens");
    tokens.replaceChildren();
    for (const span of cache.spans) {
      if (span.state === "evicted") {
        const marker = document.createElement("span");
        marker.className = "marker";
        marker.textContent = "eviction began here (" + span.tokens + " tokens gone)";
        tokens.appendChild(marker);
      }
      const part = document.createElement("span");
      part.className = "tok " + span.state;
      part.dataset.tokens = span.tokens;
      part.title = span.tokens + " tokens: " + span.state;
      // long evicted text is shortened to its end, so sinks, the marker and the window stay in view together
      const long = span.state === "evicted" && span.text.length > EVICTED_SHOWN;
      part.textContent = long ? "\u2026" + span.text.slice(-EVICTED_SHOWN) : span.text;
      tokens.appendChild(part);
    }
    tokens.dataset.state = "filled";
  }

  // -- theme ---------------------------------------------------------------------------------------------
  const saved = window.localStorage.getItem("tenfold-theme");
  if (saved) document.documentElement.dataset.theme = saved;
  $("theme").addEventListener("click", () => {
    const dark = document.documentElement.dataset.theme
      ? document.documentElement.dataset.theme === "dark"
      : window.matchMedia("(prefers-color-scheme: dark)").matches;
    document.documentElement.dataset.theme = dark ? "light" : "dark";
    window.localStorage.setItem("tenfold-theme", document.documentElement.dataset.theme);
  });

  connect().catch((e) => status("Cannot reach the server: " + (e.message || e), true));
})();
