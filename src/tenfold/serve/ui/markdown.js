// A small Markdown renderer that builds DOM nodes with textContent only: no HTML is ever parsed, so model output
// holding <script> or <img onerror> is shown as the text it is. Covers what chat answers use: fenced code blocks,
// headings, bullet and numbered lists, paragraphs, `inline code`, **bold**, *italic* and [links](https://...)
// (http and https only, opened without a referrer). Anything it does not recognise stays the text it is.
"use strict";
(function () {
  // `code`, **bold**, *italic* (not inside words: 2*3*4 stays as written) and [label](http(s) URL, one level of
  // parentheses allowed inside it)
  const INLINE = /(`[^`]+`)|(\*\*(?=\S)[^*]+?\*\*)|((?<![\w*])\*(?=\S)[^*\n]*?[^*\s]\*(?![\w*]))|(\[([^\]]+)\]\(((?:[^()\s]|\([^()\s]*\))+)\))/g;

  function inline(text, parent) {
    let last = 0;
    for (const m of text.matchAll(INLINE)) {
      if (m.index > last) parent.appendChild(document.createTextNode(text.slice(last, m.index)));
      const token = m[0];
      let node;
      if (m[1]) {
        node = document.createElement("code");
        node.textContent = token.slice(1, -1);
      } else if (m[2]) {
        node = document.createElement("strong");
        inline(token.slice(2, -2), node);
      } else if (m[3]) {
        node = document.createElement("em");
        inline(token.slice(1, -1), node);
      } else {
        let url = null;
        try { url = new URL(m[6]); } catch (e) { url = null; }
        if (url && (url.protocol === "http:" || url.protocol === "https:")) {
          node = document.createElement("a");
          node.href = url.href;
          node.rel = "noopener noreferrer";
          node.target = "_blank";
          inline(m[5], node);
        } else {
          node = document.createTextNode(token);
        }
      }
      parent.appendChild(node);
      last = m.index + token.length;
    }
    if (last < text.length) parent.appendChild(document.createTextNode(text.slice(last)));
  }

  function paragraphs(text, parent) {
    const lines = text.split("\n");
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (!line.trim()) { i++; continue; }
      const heading = /^(#{1,6})\s+(.*)$/.exec(line);
      if (heading) {
        const h = document.createElement("h" + Math.min(6, heading[1].length + 2));
        inline(heading[2], h);
        parent.appendChild(h);
        i++;
        continue;
      }
      const bullet = /^\s*([-*+]|\d+[.)])\s+/;
      if (bullet.test(line)) {
        // one list, even when its items are separated by blank lines (as models often write them)
        const first = /^\s*(\d+)[.)]/.exec(line);
        const list = document.createElement(first ? "ol" : "ul");
        if (first && Number(first[1]) !== 1) list.start = Number(first[1]);
        while (i < lines.length) {
          if (bullet.test(lines[i])) {
            const li = document.createElement("li");
            inline(lines[i].replace(bullet, ""), li);
            list.appendChild(li);
            i++;
          } else if (!lines[i].trim() && i + 1 < lines.length && bullet.test(lines[i + 1])) {
            i++;
          } else {
            break;
          }
        }
        parent.appendChild(list);
        continue;
      }
      const p = document.createElement("p");
      const block = [];
      while (i < lines.length && lines[i].trim() && !bullet.test(lines[i]) && !/^#{1,6}\s/.test(lines[i])) {
        block.push(lines[i]);
        i++;
      }
      block.forEach((l, k) => {
        if (k) p.appendChild(document.createElement("br"));
        inline(l, p);
      });
      parent.appendChild(p);
    }
  }

  // Render `text` into `container` (its children are replaced).
  function renderMarkdown(text, container) {
    container.replaceChildren();
    const parts = text.split(/^```/m);
    parts.forEach((part, k) => {
      if (k % 2 === 0) {
        paragraphs(part, container);
        return;
      }
      const newline = part.indexOf("\n");
      const pre = document.createElement("pre");
      const code = document.createElement("code");
      code.textContent = newline < 0 ? "" : part.slice(newline + 1).replace(/\n$/, "");
      const lang = newline < 0 ? part.trim() : part.slice(0, newline).trim();
      if (lang) code.dataset.lang = lang;
      pre.appendChild(code);
      container.appendChild(pre);
    });
  }

  window.renderMarkdown = renderMarkdown;
})();
