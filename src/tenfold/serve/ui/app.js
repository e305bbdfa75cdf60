// The chat page of `tenfold serve`: a streamed conversation on one sink-cache session (X-Session-Id), and what
// that cache still holds (GET /v1/sessions/{id}/cache). Talks only to this server's own public API.
"use strict";
(function () {
  const $ = (id) => document.getElementById(id);
  const store = window.sessionStorage;
  const state = {
    key: store.getItem("tenfold-key") || "",
    session: store.getItem("tenfold-session") || newSessionId(),
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
    await refreshCache();
    return true;
  }

  $("key-use").addEventListener("click", async () => {
    state.key = $("key").value.trim();
    store.setItem("tenfold-key", state.key);
    await connect();
  });
  $("key").addEventListener("keydown", (e) => { if (e.key === "Enter") $("key-use").click(); });

  // -- messages ------------------------------------------------------------------------------------------
  function bubble(role, text) {
    const item = document.createElement("article");
    item.className = "msg " + role;
    const who = document.createElement("div");
    who.className = "who";
    who.textContent = role === "user" ? "You" : "Assistant";
    const body = document.createElement("div");
    body.className = "body";
    item.append(who, body);
    if (role === "assistant") {
      const copy = document.createElement("button");
      copy.type = "button";
      copy.className = "copy";
      copy.textContent = "Copy";
      copy.addEventListener("click", () => copyText(item.dataset.text || "", copy));
      item.appendChild(copy);
    }
    setText(item, text);
    $("messages").appendChild(item);
    item.scrollIntoView({block: "end"});
    return item;
  }

  function setText(item, text) {
    item.dataset.text = text;
    const body = item.querySelector(".body");
    if (item.classList.contains("assistant")) window.renderMarkdown(text, body);
    else body.textContent = text;
  }

  async function copyText(text, button) {
    try {
      await navigator.clipboard.writeText(text);
      button.textContent = "Copied";
    } catch (e) {
      button.textContent = "Copy failed";
    }
    setTimeout(() => { button.textContent = "Copy"; }, 1500);
  }

  function busy(on) {
    $("send").disabled = on;
    $("stop").disabled = !on;
    $("input").disabled = on;
  }

  async function send() {
    const text = $("input").value;
    if (!text.trim() || state.controller) return;
    $("input").value = "";
    state.history.push({role: "user", content: text});
    bubble("user", text);
    const answer = bubble("assistant", "");
    answer.classList.add("streaming");
    const system = $("system").value.trim();
    const messages = (system ? [{role: "system", content: system}] : []).concat(state.history);
    const body = {
      model: state.model, messages: messages, stream: true,
      temperature: Number($("temperature").value), max_tokens: Number($("max-tokens").value),
    };
    state.controller = new AbortController();
    busy(true);
    status("");
    let reply = "", finish = null;
    try {
      const response = await fetch("/v1/chat/completions", {
        method: "POST", headers: headers(), body: JSON.stringify(body), signal: state.controller.signal,
      });
      if (response.status === 401) {
        askForKey("The server refused the key: " + await errorText(response));
        throw new Error("API key refused");
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
          setText(answer, reply);
        }
      }
      status(finish === "length" ? "stopped at max tokens" : "");
    } catch (e) {
      if (e.name === "AbortError") status("stopped");
      else status(String(e.message || e), true);
    } finally {
      answer.classList.remove("streaming");
      state.controller = null;
      busy(false);
      if (reply) state.history.push({role: "assistant", content: reply});
      else if (state.history.length && state.history[state.history.length - 1].role === "user" && !reply) {
        answer.remove();
      }
      $("input").focus();
      await refreshCache();
    }
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
    if (state.controller) state.controller.abort();
    state.history = [];
    state.session = newSessionId();
    $("messages").replaceChildren();
    status("");
    await refreshCache();
  });

  // -- the cache -----------------------------------------------------------------------------------------
  const EVICTED_SHOWN = 400;  // characters of evicted text shown (its end)

  function show(counts) {
    $("c-seen").textContent = counts.tokens_seen;
    $("c-held").textContent = counts.in_cache;
    $("c-evicted").textContent = counts.evicted;
    $("c-fill").textContent = Math.round(100 * counts.fill) + " %";
    $("c-memory").textContent = (counts.memory_bytes / 1048576).toFixed(2) + " MB";
    $("fillbar").style.width = Math.min(100, Math.round(100 * counts.fill)) + "%";
  }

  async function refreshCache() {
    if (!state.history.length) {  // nothing sent on this session yet: there is no cache to ask about
      show({tokens_seen: 0, in_cache: 0, evicted: 0, fill: 0, memory_bytes: 0});
      $("tokens").replaceChildren();
      $("tokens").dataset.state = "empty";
      return;
    }
    const response = await fetch("/v1/sessions/" + encodeURIComponent(state.session) + "/cache", {headers: headers()});
    const tokens = $("tokens");
    if (response.status === 404) {
      show({tokens_seen: 0, in_cache: 0, evicted: 0, fill: 0, memory_bytes: 0});
      tokens.replaceChildren();
      tokens.dataset.state = "empty";
      return;
    }
    if (!response.ok) return;
    const cache = await response.json();
    show(cache);
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

  connect().catch((e) => status(String(e), true));
})();
