// A plan of an area: an SVG drawing in which latitude and longitude are
// projected onto a flat grid (equirectangular around the area's centre:
// exact enough over a city). No map tiles: a metric grid and a scale bar
// give the distances.

import { el } from "./common.js";

const M_PER_DEG = 111_320;
const WIDTH = 1000;
const MARGIN = 36;

/** Grid steps in metres, from which the one giving 4 to 10 lines is taken. */
const STEPS = [100, 200, 500, 1000, 2000, 5000, 10000, 20000, 50000];

export class Plan {
  /** `svg`: an empty `<svg>` element; its `<title>`/`<desc>` are kept. */
  constructor(svg, { minSpanM = 1500, maxAspect = 0.9, minAspect = 0.5, pad = 1.25 } = {}) {
    this.svg = svg;
    this.pad = pad;
    this.minSpanM = minSpanM;
    this.maxAspect = maxAspect;
    this.minAspect = minAspect;
    this.layers = {};
    for (const name of ["grid", "routes", "pins", "drones", "scale"]) {
      this.layers[name] = el("g", { class: `layer-${name}` });
      svg.append(this.layers[name]);
    }
    this.bounds = null;
  }

  /** Local metres east/south of the reference point. */
  #metres(loc) {
    return {
      x: (loc.longitude - this.lon0) * this.kx,
      y: (this.lat0 - loc.latitude) * M_PER_DEG,
    };
  }

  /**
   * Fits the view to `points` (with some room around them) and redraws the
   * grid. Callers redraw their own markers afterwards.
   */
  fit(points) {
    const valid = points.filter((p) => p && Number.isFinite(p.latitude) && Number.isFinite(p.longitude));
    if (valid.length === 0) return;
    const lats = valid.map((p) => p.latitude);
    const lons = valid.map((p) => p.longitude);
    this.lat0 = (Math.min(...lats) + Math.max(...lats)) / 2;
    this.lon0 = (Math.min(...lons) + Math.max(...lons)) / 2;
    this.kx = M_PER_DEG * Math.cos((this.lat0 * Math.PI) / 180);
    const ms = valid.map((p) => this.#metres(p));
    let spanX = Math.max(...ms.map((m) => m.x)) - Math.min(...ms.map((m) => m.x));
    let spanY = Math.max(...ms.map((m) => m.y)) - Math.min(...ms.map((m) => m.y));
    spanX = Math.max(spanX * this.pad, this.minSpanM);
    spanY = Math.max(spanY * this.pad, this.minSpanM);
    // Keep the drawing between wide and square: widen the short side.
    const aspect = Math.min(this.maxAspect, Math.max(this.minAspect, spanY / spanX));
    if (spanY / spanX > aspect) spanX = spanY / aspect;
    else spanY = spanX * aspect;
    this.height = Math.round(WIDTH * aspect);
    this.scale = (WIDTH - 2 * MARGIN) / spanX;
    this.spanX = spanX;
    this.spanY = spanY;
    this.bounds = { spanX, spanY };
    this.svg.setAttribute("viewBox", `0 0 ${WIDTH} ${this.height}`);
    this.#drawGrid();
  }

  /** Whether `loc` lies inside the drawing (not in its outer margin). */
  contains(loc) {
    if (!this.bounds || !loc) return false;
    const { x, y } = this.xy(loc);
    return x >= MARGIN / 2 && x <= WIDTH - MARGIN / 2 && y >= MARGIN / 2 && y <= this.height - MARGIN / 2;
  }

  /** Fits again if any of `points` is outside; true when it did. */
  ensure(points) {
    if (this.bounds && points.every((p) => !p || this.contains(p))) return false;
    this.fit(points);
    return true;
  }

  /** SVG coordinates of a location. */
  xy(loc) {
    const m = this.#metres(loc);
    return {
      x: WIDTH / 2 + m.x * this.scale,
      y: this.height / 2 + m.y * this.scale,
    };
  }

  /** Distance in metres between two locations (haversine). */
  static distance(a, b) {
    const r = 6_371_008.8;
    const rad = (d) => (d * Math.PI) / 180;
    const dlat = rad(b.latitude - a.latitude);
    const dlon = rad(b.longitude - a.longitude);
    const h = Math.sin(dlat / 2) ** 2 + Math.cos(rad(a.latitude)) * Math.cos(rad(b.latitude)) * Math.sin(dlon / 2) ** 2;
    return 2 * r * Math.atan2(Math.sqrt(h), Math.sqrt(1 - h));
  }

  #drawGrid() {
    const grid = this.layers.grid;
    const scaleLayer = this.layers.scale;
    grid.replaceChildren();
    scaleLayer.replaceChildren();
    const step = STEPS.find((s) => this.spanX / s <= 10) ?? STEPS[STEPS.length - 1];
    const px = step * this.scale;
    for (let x = (WIDTH / 2) % px; x < WIDTH; x += px) {
      grid.append(el("line", { class: "grid-line", x1: x, y1: 0, x2: x, y2: this.height }));
    }
    for (let y = (this.height / 2) % px; y < this.height; y += px) {
      grid.append(el("line", { class: "grid-line", x1: 0, y1: y, x2: WIDTH, y2: y }));
    }
    const y = this.height - 18;
    const text = step >= 1000 ? `${step / 1000} km` : `${step} m`;
    scaleLayer.append(
      el("line", { class: "scale", x1: 16, y1: y, x2: 16 + px, y2: y }),
      el("line", { class: "scale", x1: 16, y1: y - 6, x2: 16, y2: y + 6 }),
      el("line", { class: "scale", x1: 16 + px, y1: y - 6, x2: 16 + px, y2: y + 6 }),
      el("text", { class: "scale-label", x: 24 + px, y: y + 7, text }),
    );
  }

  /** A labelled pin (`P`, `D`) at `loc`, replacing any previous one of `key`. */
  pin(key, loc, letter, className, title) {
    this.layers.pins.querySelector(`[data-key="${key}"]`)?.remove();
    if (!loc) return;
    const { x, y } = this.xy(loc);
    this.layers.pins.append(
      el(
        "g",
        { "data-key": key, transform: `translate(${x} ${y})` },
        el("title", { text: title }),
        el("circle", { r: 14, class: className }),
        el("text", { class: "pin-label", "text-anchor": "middle", y: 5, text: letter }),
      ),
    );
  }

  /**
   * The marker of a moving thing (a drone), kept across calls so that CSS
   * moves it smoothly from one position to the next.
   */
  marker(key, loc, { status, title, className = "", radius = 9 } = {}) {
    const layer = this.layers.drones;
    let g = layer.querySelector(`[data-key="${CSS.escape(key)}"]`);
    const fresh = !g;
    if (fresh) {
      g = el("g", { class: `drone ${className}`.trim(), "data-key": key }, el("title"), el("circle", { r: radius }));
      layer.append(g);
    }
    if (status) g.dataset.status = status;
    g.querySelector("title").textContent = title ?? key;
    const { x, y } = this.xy(loc);
    if (fresh) g.style.transition = "none";
    g.style.transform = `translate(${x.toFixed(1)}px, ${y.toFixed(1)}px)`;
    if (fresh) requestAnimationFrame(() => requestAnimationFrame(() => g.style.removeProperty("transition")));
    return g;
  }

  /** Removes the markers whose keys are not in `keep`. */
  prune(keep) {
    for (const g of [...this.layers.drones.children]) {
      if (!keep.has(g.dataset.key)) g.remove();
    }
  }
}
