/* gptlib attention views: head view, model view and pattern view of one model's attention.
   Written for gptlib (notebooks/15_attention_maps.ipynb explains the views). Plain ES5 and the
   DOM only: no library, no network, no element ids. Every view is a <div class="gptlib-av">
   holding its data in a <script type="application/json">; this file turns each such div that is
   not yet drawn into an interactive view, so a script that runs twice, or a page holding many
   views, still draws each exactly once. */
(function () {
  "use strict";
  var KEY = "gptlibAttentionViews_" + "%VERSION%";
  // Front ends run this script at different moments: a page's parser runs it inside its view;
  // JupyterLab once the output is attached; classic Notebook (jQuery) before the output is
  // attached to the page, where no query can find it yet. So: draw the view this script sits
  // in if the browser says which, every view not yet drawn, and look again a little later.
  var here = document.currentScript && document.currentScript.parentNode;
  function start() {
    var lib = window[KEY];
    if (here && here.classList && here.classList.contains("gptlib-av")) lib.init(here);
    lib.initAll();
    [0, 100, 500, 2000].forEach(function (ms) { setTimeout(lib.initAll, ms); });
  }
  if (window[KEY]) {
    start();
    return;
  }
  var COLOURS = ["#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
                 "#e377c2", "#7f7f7f", "#bcbd22", "#17becf"];
  var ROW = 18, LINE_WIDTH = 200, OVERVIEW_MIN = 0.01, OVERVIEW_MIN_LONG = 0.05, FOCUS_MIN = 0.005;

  // One colour per head: a categorical palette up to 10 heads, evenly spaced hues beyond.
  function colour(head, heads) {
    return heads <= COLOURS.length ? COLOURS[head] : "hsl(" + Math.round(head * 360 / heads) + ",70%,40%)";
  }

  // Blues, as in the book's matplotlib figures: white at 0, dark blue at 1.
  function blue(v) {
    v = Math.max(0, Math.min(1, v));
    return [Math.round(247 - v * 239), Math.round(251 - v * 203), Math.round(255 - v * 148)];
  }

  function el(tag, cls, text) {
    var node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }

  function bytes(b64) {
    var raw = atob(b64), out = new Uint8Array(raw.length);
    for (var i = 0; i < raw.length; i++) out[i] = raw.charCodeAt(i);
    return out;
  }

  // Unsigned LEB128 varints (values below 2^14: one or two bytes each).
  function varints(b64, count) {
    var data = bytes(b64), out = new Uint16Array(count), at = 0;
    for (var i = 0; i < count; i++) {
      var b = data[at++], v = b & 127;
      if (b & 128) v |= data[at++] << 7;
      out[i] = v;
    }
    return out;
  }

  // The weights: for every (layer, head, query) row, its runs of kept keys and their levels.
  function Weights(d) {
    var rows = d.layers.length * d.heads * d.n, r, i;
    var runCounts = varints(d.counts, rows), totalRuns = 0;
    for (r = 0; r < rows; r++) totalRuns += runCounts[r];
    var runs = varints(d.runs, 2 * totalRuns), total = 0;
    for (i = 0; i < totalRuns; i++) total += runs[2 * i + 1];
    this.start = new Uint32Array(rows + 1);
    this.keys = new Uint16Array(total);
    var run = 0, e = 0;
    for (r = 0; r < rows; r++) {
      var k = 0;
      for (var j = 0; j < runCounts[r]; j++, run++) {
        k += runs[2 * run];
        for (var m = 0; m < runs[2 * run + 1]; m++) this.keys[e++] = k++;
      }
      this.start[r + 1] = e;
    }
    this.levels = varints(d.levels, total);
    this.n = d.n; this.heads = d.heads; this.res = d.res;
  }
  Weights.prototype.row = function (layerIndex, head, q) {
    return (layerIndex * this.heads + head) * this.n + q;
  };
  Weights.prototype.get = function (layerIndex, head, q, k) {
    var r = this.row(layerIndex, head, q);
    for (var e = this.start[r]; e < this.start[r + 1]; e++) {
      if (this.keys[e] === k) return this.levels[e] / this.res;
      if (this.keys[e] > k) break;
    }
    return 0;
  };
  // Calls fn(q, k, weight) for every kept weight of one head.
  Weights.prototype.each = function (layerIndex, head, fn) {
    for (var q = 0; q < this.n; q++) {
      var r = this.row(layerIndex, head, q);
      for (var e = this.start[r]; e < this.start[r + 1]; e++) fn(q, this.keys[e], this.levels[e] / this.res);
    }
  };

  function fmt(w) { return w.toFixed(4); }

  function View(root) {
    this.root = root;
    var d = JSON.parse(root.querySelector('script[type="application/json"]').textContent);
    this.d = d;
    this.w = new Weights(d);
    this.layerIndex = 0;
    this.active = [];
    for (var h = 0; h < d.heads; h++) this.active.push(true);
    this.patternHead = 0;
    this.focus = null;
    this.pinned = false;
    this.body = root.querySelector(".gav-body");
    this.buildControls();
    if (d.parts.indexOf("model") >= 0) this.buildModel();
    if (d.parts.indexOf("head") >= 0) this.buildHead();
    if (d.parts.indexOf("pattern") >= 0) this.buildPattern();
    this.redraw();
  }

  View.prototype.label = function (i) { return this.d.tokens[i]; };

  View.prototype.buildControls = function () {
    var self = this, d = this.d, bar = el("div", "gav-bar");
    bar.appendChild(el("span", null, "layer"));
    var select = el("select", "gav-layer");
    d.layers.forEach(function (layer, i) {
      var o = el("option", null, String(layer)); o.value = String(i); select.appendChild(o);
    });
    select.onchange = function () { self.layerIndex = +select.value; self.redraw(); };
    bar.appendChild(select);
    this.layerSelect = select;
    this.body.appendChild(bar);
  };

  View.prototype.select = function (layerIndex, head) {
    this.layerIndex = layerIndex;
    this.layerSelect.value = String(layerIndex);
    for (var h = 0; h < this.d.heads; h++) this.active[h] = h === head;
    this.patternHead = head;
    if (this.patternSelect) this.patternSelect.value = String(head);
    this.focus = null; this.pinned = false;
    this.redraw();
  };

  // ---------------------------------------------------------------- model view
  View.prototype.buildModel = function () {
    var self = this, d = this.d, w = this.w;
    this.body.appendChild(el("h4", null, "Model view: every layer (rows) and head (columns); click one to open it"));
    var grid = el("div", "gav-grid");
    grid.style.gridTemplateColumns = "auto repeat(" + d.heads + ", 68px)";
    grid.appendChild(el("span", null, ""));
    for (var h = 0; h < d.heads; h++) grid.appendChild(el("span", null, "head " + h));
    var size = Math.min(d.n, 64);
    this.thumbs = [];
    d.layers.forEach(function (layer, li) {
      grid.appendChild(el("span", null, "layer " + layer));
      for (var h = 0; h < d.heads; h++) {
        var c = el("canvas", "gav-thumb");
        c.width = size; c.height = size;
        c.setAttribute("data-layer", String(layer));
        c.setAttribute("data-head", String(h));
        c.title = "layer " + layer + ", head " + h;
        var peak = new Float32Array(size * size);
        w.each(li, h, function (q, k, v) {
          var at = Math.floor(q * size / d.n) * size + Math.floor(k * size / d.n);
          if (v > peak[at]) peak[at] = v;
        });
        var ctx = c.getContext("2d"), img = ctx.createImageData(size, size);
        for (var p = 0; p < size * size; p++) {
          var rgb = blue(peak[p]);
          img.data[4 * p] = rgb[0]; img.data[4 * p + 1] = rgb[1]; img.data[4 * p + 2] = rgb[2];
          img.data[4 * p + 3] = 255;
        }
        ctx.putImageData(img, 0, 0);
        c.onclick = (function (li2, h2) { return function () { self.select(li2, h2); }; })(li, h);
        grid.appendChild(c);
        self.thumbs.push(c);
      }
    });
    this.body.appendChild(grid);
  };

  // ---------------------------------------------------------------- head view
  View.prototype.buildHead = function () {
    var self = this, d = this.d;
    this.body.appendChild(el("h4", null, "Head view: lines from each query (left) to the keys it attends to (right)"));
    var bar = el("div", "gav-bar");
    bar.appendChild(el("span", null, "heads"));
    this.toggles = [];
    for (var h = 0; h < d.heads; h++) {
      var b = el("button", "gav-toggle", String(h));
      b.style.setProperty("--c", colour(h, d.heads));
      b.setAttribute("data-head", String(h));
      b.title = "show or hide head " + h;
      b.onclick = (function (h2) {
        return function () { self.active[h2] = !self.active[h2]; self.redraw(); };
      })(h);
      bar.appendChild(b);
      this.toggles.push(b);
    }
    var all = el("button", "gav-all", "all"), none = el("button", "gav-none", "none");
    all.onclick = function () { for (var i = 0; i < d.heads; i++) self.active[i] = true; self.redraw(); };
    none.onclick = function () { for (var i = 0; i < d.heads; i++) self.active[i] = false; self.redraw(); };
    bar.appendChild(all); bar.appendChild(none);
    this.body.appendChild(bar);
    this.headReadout = el("div", "gav-readout",
      "Hover a token to isolate its lines (click to pin); weights appear beside the other column.");
    this.body.appendChild(this.headReadout);
    var scroll = el("div", "gav-scroll"), cols = el("div", "gav-columns");
    var left = el("div", "gav-col gav-left"), right = el("div", "gav-col gav-right");
    this.leftToks = []; this.rightToks = [];
    for (var i = 0; i < d.n; i++) {
      var a = el("div", "gav-tok", this.label(i)), b2 = el("div", "gav-tok");
      a.title = "query " + i + ": " + this.label(i);
      b2.appendChild(el("span", "gav-text", this.label(i)));
      b2.appendChild(el("span", "gav-badges"));
      b2.title = "key " + i + ": " + this.label(i);
      a.appendChild(el("span", "gav-badges"));
      a.onmouseenter = (function (i2) { return function () { self.hover("query", i2); }; })(i);
      b2.onmouseenter = (function (i2) { return function () { self.hover("key", i2); }; })(i);
      a.onclick = b2.onclick = function () {
        self.pinned = !self.pinned && self.focus !== null;
        self.drawHead();
      };
      left.appendChild(a); right.appendChild(b2);
      this.leftToks.push(a); this.rightToks.push(b2);
    }
    cols.appendChild(left);
    var holder = el("div");
    holder.innerHTML = '<svg class="gav-lines" width="' + LINE_WIDTH + '" height="' + d.n * ROW + '"></svg>';
    this.svg = holder.firstChild;
    cols.appendChild(this.svg);
    cols.appendChild(right);
    cols.onmouseleave = function () { if (!self.pinned) { self.focus = null; self.drawHead(); } };
    scroll.appendChild(cols);
    this.body.appendChild(scroll);
  };

  View.prototype.hover = function (side, i) {
    if (this.pinned) return;
    this.focus = { side: side, i: i };
    this.drawHead();
  };

  View.prototype.drawHead = function () {
    var d = this.d, w = this.w, li = this.layerIndex, svg = this.svg, self = this;
    if (!svg) return;
    while (svg.firstChild) svg.removeChild(svg.firstChild);
    var ns = svg.namespaceURI, focus = this.focus;
    var min = focus ? FOCUS_MIN : (d.n > 128 ? OVERVIEW_MIN_LONG : OVERVIEW_MIN);
    var drawn = 0;
    this.leftToks.concat(this.rightToks).forEach(function (t) {
      t.classList.remove("gav-focus");
      t.querySelector(".gav-badges").textContent = "";
    });
    var lines = [];
    for (var h = 0; h < d.heads; h++) {
      if (!this.active[h]) continue;
      var buckets = ["", "", "", "", "", "", "", ""];
      var add = function (q, k, v) {
        if (v < min) return;
        var b = Math.min(7, Math.floor(v * 8));
        buckets[b] += "M0 " + (q * ROW + ROW / 2) + "L" + LINE_WIDTH + " " + (k * ROW + ROW / 2);
        drawn++;
      };
      if (!focus) {
        w.each(li, h, add);
      } else if (focus.side === "query") {
        for (var k = 0; k <= focus.i; k++) add(focus.i, k, w.get(li, h, focus.i, k));
      } else {
        for (var q = focus.i; q < d.n; q++) add(q, focus.i, w.get(li, h, q, focus.i));
      }
      for (var b = 0; b < 8; b++) {
        if (!buckets[b]) continue;
        var path = document.createElementNS(ns, "path");
        path.setAttribute("d", buckets[b]);
        path.setAttribute("class", "gav-line");
        path.setAttribute("data-head", String(h));
        path.setAttribute("stroke", colour(h, d.heads));
        path.setAttribute("stroke-width", String(0.6 + 0.45 * b));
        path.setAttribute("stroke-opacity", String(0.25 + 0.1 * b));
        path.setAttribute("fill", "none");
        lines.push(path);
      }
    }
    lines.forEach(function (p) { svg.appendChild(p); });
    svg.setAttribute("data-lines", String(drawn));
    if (!focus) {
      this.headReadout.textContent = "layer " + d.layers[li] + ": " + drawn + " lines of weight >= " + min +
        ". Hover a token to isolate its lines (click to pin).";
      return;
    }
    var mine = focus.side === "query" ? this.leftToks : this.rightToks;
    var other = focus.side === "query" ? this.rightToks : this.leftToks;
    mine[focus.i].classList.add("gav-focus");
    var parts = [];
    for (h = 0; h < d.heads; h++) {
      if (!this.active[h]) continue;
      var best = -1, bestW = -1, from = focus.side === "query" ? 0 : focus.i;
      var to = focus.side === "query" ? focus.i : d.n - 1;
      for (var j = from; j <= to; j++) {
        var v = focus.side === "query" ? w.get(li, h, focus.i, j) : w.get(li, h, j, focus.i);
        if (v >= FOCUS_MIN) {
          var badge = el("span", "gav-badge", v.toFixed(3));
          badge.style.background = colour(h, d.heads);
          badge.title = "head " + h + ": " + fmt(v);
          badge.setAttribute("data-head", String(h));
          badge.setAttribute("data-weight", fmt(v));
          other[j].querySelector(".gav-badges").appendChild(badge);
        }
        if (v > bestW) { bestW = v; best = j; }
      }
      parts.push("head " + h + ": " + (focus.side === "query" ? "strongest key " : "strongest query ") +
        best + " " + JSON.stringify(self.label(best)) + " " + fmt(bestW));
    }
    this.headReadout.textContent = "layer " + d.layers[li] + ", " + focus.side + " " + focus.i + " " +
      JSON.stringify(this.label(focus.i)) + (this.pinned ? " (pinned)" : "") + "\n" + parts.join("\n");
  };

  // ---------------------------------------------------------------- pattern view
  View.prototype.buildPattern = function () {
    var self = this, d = this.d;
    this.body.appendChild(el("h4", null, "Pattern view: one head's weights, query (rows) by key (columns)"));
    var bar = el("div", "gav-bar");
    bar.appendChild(el("span", null, "head"));
    var select = el("select", "gav-pattern-head");
    for (var h = 0; h < d.heads; h++) {
      var o = el("option", null, String(h)); o.value = String(h); select.appendChild(o);
    }
    select.onchange = function () { self.patternHead = +select.value; self.drawPattern(); };
    bar.appendChild(select);
    this.patternSelect = select;
    this.body.appendChild(bar);
    this.patternReadout = el("div", "gav-readout", "Hover a cell to read its exact weight.");
    this.body.appendChild(this.patternReadout);
    var cell = Math.max(1, Math.min(16, Math.floor(640 / d.n)));
    this.cell = cell;
    this.labelled = cell >= 10;
    var ctx = document.createElement("canvas").getContext("2d");
    ctx.font = "11px monospace";
    var widest = 0;
    if (this.labelled) d.tokens.forEach(function (t) { widest = Math.max(widest, ctx.measureText(t).width); });
    this.margin = this.labelled ? Math.min(90, Math.ceil(widest) + 8) : 0;
    var wrap = el("div");
    wrap.appendChild(el("div", "gav-axis", "key (attended to) \u2192, query (attending) \u2193"));
    var box = el("div", "gav-heatmap");
    var canvas = el("canvas", "gav-pattern");
    canvas.width = this.margin + d.n * cell; canvas.height = this.margin + d.n * cell;
    box.appendChild(canvas);
    var cursor = el("div", "gav-cursor");
    box.appendChild(cursor);
    this.patternCanvas = canvas; this.cursor = cursor;
    wrap.appendChild(box);
    var scale = el("div", "gav-scale"), bar2 = document.createElement("canvas");
    bar2.width = 14; bar2.height = 160; bar2.className = "gav-scale-bar";
    var sctx = bar2.getContext("2d");
    for (var y = 0; y < 160; y++) {
      var rgb = blue(1 - y / 159);
      sctx.fillStyle = "rgb(" + rgb.join(",") + ")"; sctx.fillRect(0, y, 14, 1);
    }
    var ticks = el("div", "gav-scale-ticks");
    ["1.0", "0.75", "0.5", "0.25", "0.0"].forEach(function (t) { ticks.appendChild(el("span", null, t)); });
    scale.appendChild(bar2); scale.appendChild(ticks);
    scale.appendChild(el("span", "gav-axis", "attention weight"));
    wrap.appendChild(scale);
    this.body.appendChild(wrap);
    canvas.onmousemove = function (event) {
      var rect = canvas.getBoundingClientRect();
      var x = event.clientX - rect.left - self.margin, y2 = event.clientY - rect.top - self.margin;
      var k = Math.floor(x / cell), q = Math.floor(y2 / cell);
      if (x < 0 || y2 < 0 || k >= d.n || q >= d.n) { cursor.style.display = "none"; return; }
      cursor.style.display = "block";
      cursor.style.left = (self.margin + k * cell - 1) + "px"; cursor.style.top = (self.margin + q * cell - 1) + "px";
      cursor.style.width = (cell + 2) + "px"; cursor.style.height = (cell + 2) + "px";
      var text = "layer " + d.layers[self.layerIndex] + ", head " + self.patternHead + ": query " + q + " " +
        JSON.stringify(self.label(q)) + " \u2192 key " + k + " " + JSON.stringify(self.label(k)) + ": ";
      if (k > q) text += "masked (a future token)";
      else text += fmt(self.w.get(self.layerIndex, self.patternHead, q, k));
      self.patternReadout.textContent = text;
    };
    canvas.onmouseleave = function () { cursor.style.display = "none"; };
  };

  View.prototype.drawPattern = function () {
    var d = this.d, cell = this.cell, m = this.margin, canvas = this.patternCanvas;
    if (!canvas) return;
    var ctx = canvas.getContext("2d");
    ctx.fillStyle = "#fff"; ctx.fillRect(0, 0, canvas.width, canvas.height);
    var rgb0 = blue(0);
    ctx.fillStyle = "rgb(" + rgb0.join(",") + ")";
    for (var q = 0; q < d.n; q++) ctx.fillRect(m, m + q * cell, (q + 1) * cell, cell);
    this.w.each(this.layerIndex, this.patternHead, function (q2, k, v) {
      ctx.fillStyle = "rgb(" + blue(v).join(",") + ")";
      ctx.fillRect(m + k * cell, m + q2 * cell, cell, cell);
    });
    if (this.labelled) {
      ctx.fillStyle = "#333"; ctx.font = "11px monospace"; ctx.textBaseline = "middle";
      ctx.textAlign = "right";
      for (q = 0; q < d.n; q++) ctx.fillText(d.tokens[q], m - 4, m + q * cell + cell / 2, m - 6);
      for (var k = 0; k < d.n; k++) {
        ctx.save();
        ctx.translate(m + k * cell + cell / 2, m - 4);
        ctx.rotate(-Math.PI / 2);
        ctx.textAlign = "left";
        ctx.fillText(d.tokens[k], 0, 0, m - 6);
        ctx.restore();
      }
    }
  };

  View.prototype.redraw = function () {
    var d = this.d, self = this;
    if (this.toggles) this.toggles.forEach(function (b, h) { b.setAttribute("aria-pressed", String(self.active[h])); });
    if (this.thumbs) {
      var only = -1, count = 0;
      this.active.forEach(function (on, h) { if (on) { count++; only = h; } });
      this.thumbs.forEach(function (c, i) {
        var selected = Math.floor(i / d.heads) === self.layerIndex && count === 1 && i % d.heads === only;
        c.classList.toggle("gav-selected", selected);
      });
    }
    this.drawHead();
    this.drawPattern();
  };

  function init(root) {
    if (root.hasAttribute("data-ready") || root.getAttribute("data-lib") !== "%VERSION%") return;
    root.setAttribute("data-ready", "");
    try {
      root.gptlibView = new View(root);
    } catch (err) {
      root.removeAttribute("data-ready");
      throw err;
    }
  }

  window[KEY] = {
    init: init,
    initAll: function () {
      var roots = document.querySelectorAll('.gptlib-av[data-lib="%VERSION%"]:not([data-ready])');
      for (var i = 0; i < roots.length; i++) init(roots[i]);
    }
  };
  start();
})();
