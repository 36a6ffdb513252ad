// Parallel coordinates for the history page, drawn on a canvas (10,000 lines stay quick).
// Values are only drawn or set with textContent: nothing from the store becomes HTML.
"use strict";

window.ParallelCoordinates = (function () {
  const MARGIN = { top: 12, bottom: 22, side: 60 };
  const GRAB_PX = 24;

  // colour of a line by its result: blue (low) to orange (high)
  function ramp(t) {
    const a = [49, 104, 174], b = [232, 119, 34];
    const c = a.map((v, i) => Math.round(v + (b[i] - v) * t));
    return "rgba(" + c.join(",") + ",0.55)";
  }

  class Plot {
    constructor(canvas, heads, onBrush) {
      this.canvas = canvas;
      this.heads = heads;
      this.onBrush = onBrush; // called with the brushes after every change
      this.data = null;
      this.brushes = []; // {axis, min, max} | {axis, values}
      this.logs = new Set();
      this.selected = new Set();
      this.drag = null;
      canvas.addEventListener("mousedown", (e) => this.down(e));
      window.addEventListener("mousemove", (e) => this.move(e));
      window.addEventListener("mouseup", (e) => this.up(e));
      window.addEventListener("resize", () => this.draw());
    }

    set(data) {
      this.data = data;
      const names = new Set(data.axes.map((a) => a.name));
      for (const name of [...this.logs]) if (!names.has(name)) this.logs.delete(name);
      this.renderHeads();
      this.draw();
    }

    geometry() {
      const width = this.canvas.clientWidth || 800;
      const height = this.canvas.clientHeight || 300;
      const n = this.data ? this.data.axes.length : 0;
      const span = width - 2 * MARGIN.side;
      const xs = [];
      for (let i = 0; i < n; i++) xs.push(n === 1 ? width / 2 : MARGIN.side + (span * i) / (n - 1));
      return { width, height, xs, top: MARGIN.top, bottom: height - MARGIN.bottom };
    }

    isLog(axis) {
      return axis.kind === "number" && axis.positive && this.logs.has(axis.name);
    }

    // position of a value on an axis, 0 (bottom) .. 1 (top); null when missing
    unit(axis, value) {
      if (value === null || value === undefined) return null;
      if (axis.kind === "category") {
        const k = axis.categories.length;
        return k > 1 ? value / (k - 1) : 0.5;
      }
      let lo = axis.min, hi = axis.max, v = value;
      if (this.isLog(axis)) { lo = Math.log10(lo); hi = Math.log10(hi); v = Math.log10(v); }
      return hi > lo ? (v - lo) / (hi - lo) : 0.5;
    }

    fromUnit(axis, t) {
      let lo = axis.min, hi = axis.max;
      if (this.isLog(axis)) {
        lo = Math.log10(lo); hi = Math.log10(hi);
        return Math.pow(10, lo + t * (hi - lo));
      }
      return lo + t * (hi - lo);
    }

    inside(row) {
      for (const brush of this.brushes) {
        const index = this.data.axes.findIndex((a) => a.name === brush.axis);
        if (index < 0) continue;
        const axis = this.data.axes[index];
        const value = axis.values[row];
        if (value === null) return false;
        if (brush.values) {
          if (!brush.values.includes(axis.categories[value])) return false;
        } else if (value < brush.min || value > brush.max) return false;
      }
      return true;
    }

    renderHeads() {
      const { xs } = this.geometry();
      const heads = this.data.axes.map((axis, i) => {
        const head = document.createElement("div");
        head.className = "axis-head";
        head.style.left = xs[i] + "px";
        head.dataset.axis = axis.name;
        const name = document.createElement("span");
        name.textContent = axis.name;
        name.title = axis.name;
        head.append(name);
        if (axis.kind === "number" && axis.positive) {
          const label = document.createElement("label");
          const box = document.createElement("input");
          box.type = "checkbox";
          box.className = "axis-log";
          box.checked = this.logs.has(axis.name);
          box.addEventListener("change", () => {
            if (box.checked) this.logs.add(axis.name); else this.logs.delete(axis.name);
            this.draw();
            this.onBrush(this.brushes, true);
          });
          label.append(box, " log");
          head.append(label);
        }
        return head;
      });
      this.heads.replaceChildren(...heads);
    }

    draw() {
      const canvas = this.canvas;
      const ratio = window.devicePixelRatio || 1;
      const g = this.geometry();
      canvas.width = Math.round(g.width * ratio);
      canvas.height = Math.round(g.height * ratio);
      const ctx = canvas.getContext("2d");
      ctx.setTransform(ratio, 0, 0, ratio, 0, 0);
      ctx.clearRect(0, 0, g.width, g.height);
      if (!this.data || !this.data.axes.length) return;
      for (const [i, head] of [...this.heads.children].entries()) head.style.left = g.xs[i] + "px";
      const axes = this.data.axes;
      const y = (t) => g.bottom - t * (g.bottom - g.top);
      const result = axes[axes.length - 1];
      const kept = [], dropped = [];
      for (let row = 0; row < this.data.ids.length; row++) {
        (this.inside(row) ? kept : dropped).push(row);
      }
      const line = (row) => {
        ctx.beginPath();
        let drawing = false;
        axes.forEach((axis, i) => {
          const t = this.unit(axis, axis.values[row]);
          if (t === null) { drawing = false; return; }
          if (drawing) ctx.lineTo(g.xs[i], y(t)); else ctx.moveTo(g.xs[i], y(t));
          drawing = true;
        });
        ctx.stroke();
      };
      ctx.lineWidth = 1;
      ctx.strokeStyle = "rgba(160,160,160,0.12)";
      for (const row of dropped) line(row);
      for (const row of kept) {
        const t = this.unit(result, result.values[row]);
        ctx.strokeStyle = t === null ? "rgba(120,120,120,0.5)" : ramp(t);
        line(row);
      }
      ctx.lineWidth = 2.5;
      ctx.strokeStyle = "rgba(207,34,46,0.9)";
      for (let row = 0; row < this.data.ids.length; row++) {
        if (this.selected.has(this.data.ids[row])) line(row);
      }
      this.drawAxes(ctx, g, y);
      this.canvas.dataset.kept = String(kept.length);
      this.canvas.dataset.lines = String(this.data.ids.length);
    }

    drawAxes(ctx, g, y) {
      ctx.font = "11px system-ui, sans-serif";
      this.data.axes.forEach((axis, i) => {
        const x = g.xs[i];
        ctx.strokeStyle = "#57606a";
        ctx.lineWidth = 1;
        ctx.beginPath(); ctx.moveTo(x, g.top); ctx.lineTo(x, g.bottom); ctx.stroke();
        ctx.fillStyle = "#24292f";
        const labels = axis.kind === "category"
          ? axis.categories.map((c, k) => [c, this.unit(axis, k)])
          : axis.min === null ? []
          : axis.min === axis.max ? [[fmt(axis.min), 0.5]]
          : [[fmt(axis.min), 0], [fmt(axis.max), 1]];
        const step = Math.max(1, Math.ceil(labels.length / 12));
        labels.forEach(([text, t], k) => {
          if (k % step) return;
          ctx.fillText(String(text).slice(0, 14), x + 4, y(t) + 4);
        });
        const brush = this.brushes.find((b) => b.axis === axis.name);
        const span = brush ? this.brushSpan(axis, brush) : null;
        if (span) {
          ctx.fillStyle = "rgba(9,105,218,0.18)";
          ctx.strokeStyle = "rgba(9,105,218,0.9)";
          ctx.fillRect(x - 8, y(span[1]), 16, y(span[0]) - y(span[1]));
          ctx.strokeRect(x - 8, y(span[1]), 16, y(span[0]) - y(span[1]));
        }
      });
      if (this.drag && this.drag.axis !== null) {
        const x = g.xs[this.drag.axis];
        ctx.fillStyle = "rgba(9,105,218,0.25)";
        ctx.fillRect(x - 8, Math.min(this.drag.y0, this.drag.y1), 16, Math.abs(this.drag.y1 - this.drag.y0));
      }
    }

    brushSpan(axis, brush) {
      if (!brush.values) return [this.unit(axis, brush.min), this.unit(axis, brush.max)];
      const ts = brush.values.map((v) => this.unit(axis, axis.categories.indexOf(v)));
      return [Math.min(...ts) - 0.02, Math.max(...ts) + 0.02];
    }

    point(event) {
      const box = this.canvas.getBoundingClientRect();
      return [event.clientX - box.left, event.clientY - box.top];
    }

    down(event) {
      if (!this.data) return;
      const [px, py] = this.point(event);
      const g = this.geometry();
      let best = null;
      g.xs.forEach((x, i) => {
        if (Math.abs(x - px) <= GRAB_PX && (best === null || Math.abs(x - px) < Math.abs(g.xs[best] - px))) best = i;
      });
      if (best === null) return;
      event.preventDefault();
      this.drag = { axis: best, y0: py, y1: py };
    }

    move(event) {
      if (!this.drag) return;
      this.drag.y1 = this.point(event)[1];
      this.draw();
    }

    up(event) {
      if (!this.drag) return;
      const drag = this.drag;
      this.drag = null;
      const axis = this.data.axes[drag.axis];
      this.brushes = this.brushes.filter((b) => b.axis !== axis.name);
      if (Math.abs(drag.y1 - drag.y0) >= 4) {
        const g = this.geometry();
        const t = (py) => Math.min(1, Math.max(0, (g.bottom - py) / (g.bottom - g.top)));
        const [t0, t1] = [t(drag.y0), t(drag.y1)].sort((a, b) => a - b);
        if (axis.kind === "category") {
          const values = axis.categories.filter((c, k) => {
            const u = this.unit(axis, k);
            return u >= t0 && u <= t1;
          });
          this.brushes.push({ axis: axis.name, values });
        } else {
          this.brushes.push({ axis: axis.name, min: this.fromUnit(axis, t0), max: this.fromUnit(axis, t1) });
        }
      }
      this.draw();
      this.onBrush(this.brushes, false);
    }
  }

  function fmt(value) {
    return Math.abs(value) >= 1e4 || (value !== 0 && Math.abs(value) < 1e-3)
      ? value.toExponential(2)
      : String(Math.round(value * 1e4) / 1e4);
  }

  return { Plot };
})();
