// Small SVG charts for the learnscore dashboard: line, bar and event timelines.
// No external library: the browser may have no internet access.
(function () {
  "use strict";
  const NS = "http://www.w3.org/2000/svg";
  const PALETTE = ["#2563eb", "#16a34a", "#f59e0b", "#dc2626", "#7c3aed", "#0891b2", "#db2777", "#65a30d"];
  const MARKER_COLORS = { promoted: "#16a34a", rolled_back: "#dc2626" };
  const W = 460, H = 190, M = { l: 48, r: 10, t: 10, b: 26 };

  function el(name, attrs, parent) {
    const node = document.createElementNS(NS, name);
    for (const [key, value] of Object.entries(attrs || {})) node.setAttribute(key, value);
    if (parent) parent.appendChild(node);
    return node;
  }
  function text(parent, x, y, content, attrs) {
    const node = el("text", Object.assign({ x, y, "font-size": 10, fill: "#475569" }, attrs || {}), parent);
    node.textContent = content;
    return node;
  }
  function fmt(value, percent) {
    if (value === null || value === undefined) return "–";
    if (percent) return (value * 100).toFixed(Math.abs(value) < 0.1 ? 1 : 0) + "%";
    const abs = Math.abs(value);
    if (abs >= 1e6) return (value / 1e6).toFixed(1) + "M";
    if (abs >= 1e3) return (value / 1e3).toFixed(1) + "k";
    if (abs >= 10 || value === Math.round(value)) return String(Math.round(value));
    return value.toPrecision(2);
  }
  function shortTime(iso) { return iso.slice(11, 19); }
  function frame(kind) { return el("svg", { viewBox: `0 0 ${W} ${H}`, class: "chart " + kind, role: "img" }); }
  function yScale(max) { const top = max > 0 ? max * 1.08 : 1; return (v) => M.t + (H - M.t - M.b) * (1 - v / top); }
  function axes(svg, max, percent) {
    const y = yScale(max);
    const top = max > 0 ? max * 1.08 : 1;
    for (let i = 0; i <= 4; i++) {
      const value = (top * i) / 4, py = y(value);
      el("line", { x1: M.l, x2: W - M.r, y1: py, y2: py, stroke: "#e2e8f0" }, svg);
      text(svg, M.l - 4, py + 3, fmt(value, percent), { "text-anchor": "end" });
    }
    return y;
  }
  function legend(container, series) {
    const box = document.createElement("div");
    box.className = "legend";
    series.forEach((s, i) => {
      const item = document.createElement("span");
      item.innerHTML = `<i style="background:${PALETTE[i % PALETTE.length]}"></i>`;
      item.appendChild(document.createTextNode(s.name));
      box.appendChild(item);
    });
    container.appendChild(box);
  }

  // Vertical markers (promotions, rollbacks) at their time on a line chart's axis: placed between
  // the two points around it, in proportion to the time (the points need not be evenly spaced).
  function markers(svg, chart, x) {
    const times = chart.x.map((t) => Date.parse(t)), n = times.length;
    (chart.markers || []).forEach((m, mi) => {
      const t = Date.parse(m.t);
      let i = 0;
      while (i < n - 2 && t > times[i + 1]) i++;
      const span = n > 1 ? times[i + 1] - times[i] : 0;
      const at = span > 0 ? i + Math.min(1, Math.max(0, (t - times[i]) / span)) : i;
      const px = n > 1 ? M.l + ((W - M.l - M.r) * at) / (n - 1) : x(0);
      const color = MARKER_COLORS[m.kind] || "#475569";
      const mark = el("line", { x1: px, x2: px, y1: M.t, y2: H - M.b, stroke: color, "stroke-width": 1.2,
                                "stroke-dasharray": "4 3", class: "marker " + m.kind }, svg);
      el("title", {}, mark).textContent = `${m.t} ${m.label}${m.detail ? "\n" + m.detail : ""}`;
      const right = px > W / 2;  // labels on the right half read leftwards, inside the frame
      text(svg, right ? px - 3 : px + 3, M.t + 9 + (mi % 3) * 10, m.label,
           { fill: color, "font-size": 9, "text-anchor": right ? "end" : "start" });
    });
  }

  function line(container, chart) {
    const svg = frame("line");
    const n = chart.x.length;
    const values = chart.series.flatMap((s) => s.values.filter((v) => v !== null));
    const y = axes(svg, Math.max(0, ...values), chart.percent);
    const x = (i) => M.l + (n <= 1 ? (W - M.l - M.r) / 2 : ((W - M.l - M.r) * i) / (n - 1));
    if (n > 0) {
      text(svg, M.l, H - 8, shortTime(chart.x[0]));
      if (n > 1) text(svg, W - M.r, H - 8, shortTime(chart.x[n - 1]), { "text-anchor": "end" });
    }
    if (n > 0) markers(svg, chart, x);
    chart.series.forEach((s, si) => {
      const color = PALETTE[si % PALETTE.length];
      let path = "", pen = false;
      s.values.forEach((v, i) => {
        if (v === null) { pen = false; return; }
        path += `${pen ? "L" : "M"}${x(i).toFixed(1)},${y(v).toFixed(1)}`;
        pen = true;
      });
      if (path) el("path", { d: path, fill: "none", stroke: color, "stroke-width": 1.8, class: "series" }, svg);
      s.values.forEach((v, i) => {
        if (v === null || n > 60) return;
        const dot = el("circle", { cx: x(i), cy: y(v), r: 2.4, fill: color, class: "point" }, svg);
        el("title", {}, dot).textContent = `${s.name} ${chart.x[i]}: ${fmt(v, chart.percent)}`;
      });
    });
    container.appendChild(svg);
    legend(container, chart.series);
  }

  function bar(container, chart) {
    const svg = frame("bar");
    const cats = chart.categories, groups = chart.series.length;
    const values = chart.series.flatMap((s) => s.values.filter((v) => v !== null));
    const y = axes(svg, Math.max(0, ...values), chart.percent);
    const slot = (W - M.l - M.r) / Math.max(1, cats.length);
    const width = Math.max(1, (slot * 0.8) / groups);
    cats.forEach((cat, ci) => {
      chart.series.forEach((s, si) => {
        const v = s.values[ci];
        if (v === null) return;
        const x = M.l + ci * slot + slot * 0.1 + si * width;
        const rect = el("rect", { x, y: y(v), width, height: Math.max(0, H - M.b - y(v)),
                                  fill: PALETTE[si % PALETTE.length], class: "bar" }, svg);
        el("title", {}, rect).textContent = `${s.name} ${cat}: ${fmt(v, chart.percent)}`;
      });
      if (cats.length <= 12 || ci % Math.ceil(cats.length / 10) === 0)
        text(svg, M.l + ci * slot + slot / 2, H - 10, String(cat).slice(0, 12), { "text-anchor": "middle" });
    });
    container.appendChild(svg);
    if (groups > 1) legend(container, chart.series);
  }

  function events(container, chart) {
    const svg = frame("events");
    const groups = [...new Set(chart.points.map((p) => p.group))];
    const times = chart.points.map((p) => Date.parse(p.t));
    const lo = Math.min(...times), hi = Math.max(...times);
    const left = 120, lane = (H - M.t - M.b) / Math.max(1, groups.length);
    const x = (t) => left + (hi === lo ? (W - left - M.r) / 2 : ((W - left - M.r) * (t - lo)) / (hi - lo));
    groups.forEach((g, gi) => {
      const py = M.t + lane * (gi + 0.5);
      el("line", { x1: left, x2: W - M.r, y1: py, y2: py, stroke: "#e2e8f0" }, svg);
      text(svg, left - 6, py + 3, g.slice(0, 22), { "text-anchor": "end" });
    });
    chart.points.forEach((p) => {
      const gi = groups.indexOf(p.group);
      const dot = el("circle", { cx: x(Date.parse(p.t)), cy: M.t + lane * (gi + 0.5), r: 4.5,
                                 fill: PALETTE[gi % PALETTE.length], class: "event" }, svg);
      el("title", {}, dot).textContent = `${p.t} ${p.label}\n${p.detail || ""}`;
    });
    if (chart.points.length) {
      text(svg, left, H - 8, shortTime(chart.points[0].t));
      text(svg, W - M.r, H - 8, shortTime(chart.points[chart.points.length - 1].t), { "text-anchor": "end" });
    }
    container.appendChild(svg);
    const list = document.createElement("ol");
    list.className = "event-list";
    chart.points.slice(-5).reverse().forEach((p) => {
      const item = document.createElement("li");
      item.textContent = `${p.t.slice(0, 19).replace("T", " ")} · ${p.group} · ${p.label}`;
      list.appendChild(item);
    });
    container.appendChild(list);
  }

  window.LSCharts = {
    render(container, chart) {
      const box = document.createElement("figure");
      box.className = "chart-box";
      const caption = document.createElement("figcaption");
      caption.textContent = chart.title || "";
      box.appendChild(caption);
      ({ line, bar, events })[chart.type](box, chart);
      container.appendChild(box);
    },
  };
})();
