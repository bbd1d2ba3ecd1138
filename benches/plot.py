#!/usr/bin/env python3
"""Results of benches/run.sh: assembles the JSON, prints the Markdown table,
draws the pool-width SVG. Python standard library only.

    plot.py assemble WORKDIR OUT.json [--bench-seconds N]
        merge the per-scenario JSON pieces run.sh left in WORKDIR (loadgen's
        outputs) into one results file with a `summary` of every figure
    plot.py table RESULTS.json
        the Markdown table of the summary, with the ratios to the original
        system's figures and to the targets
    plot.py svg RESULTS.json OUT.svg
        deliveries/s and ingest p99 against the consumer pool width
"""

import glob
import json
import math
import os
import sys

# The original system's published figures and this project's targets.
REFERENCES = {
    "original_ingestion_rps": {
        "value": 1275,
        "what": "original Ingestion service, average req/s (10 replicas)",
    },
    "original_workflow_dps": {
        "value": 1100,
        "what": "original workflow, ~deliveries/s (35 replicas)",
    },
    "target_e2e_dps": {"value": 5000, "what": "end-to-end deliveries/s, at least"},
    "target_ingest_vs_hello": {"value": 0.5, "what": "ingestion req/s / hello-world req/s, at least"},
    "target_open_p99_ms": {"value": 10, "what": "ingestion p99 at 5,000 req/s open loop, ms, at most"},
    "target_packages_vs_node": {"value": 5, "what": "package PUT+GET req/s / Node.js service's, at least"},
}


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def get(d, *keys):
    for k in keys:
        if not isinstance(d, dict) or k not in d:
            return None
        d = d[k]
    return d


def ratio(a, b):
    if a is None or b in (None, 0):
        return None
    return round(a / b, 3)


def row(scenario, figure, value, unit, original=None, target=None, met=None, note=None):
    """One figure of the summary. `original`/`target`: (value, ratio) or None."""
    return {
        "scenario": scenario,
        "figure": figure,
        "value": value,
        "unit": unit,
        "original": original,
        "target": target,
        "met": met,
        "note": note,
    }


def client_note(r):
    """How much of the machine the load generator itself took."""
    if not r or r.get("loadgen_cpu_share") is None:
        return ""
    return (f"loadgen: {r.get('loadgen_threads', 1)} thread(s), "
            f"{100 * r['loadgen_cpu_share']:.0f}% of a core")


def summarize(s):
    refs = {k: v["value"] for k, v in REFERENCES.items()}
    rows = []
    hello = s.get("hello") or {}
    ing = s.get("ingest_closed") or {}
    opn = s.get("ingest_open") or {}
    e2e = s.get("e2e") or {}
    hello_rps = hello.get("ok_rps")
    rows.append(row("a", "hello-world (axum) max throughput, closed loop", hello_rps, "req/s",
                    note=client_note(hello)))

    ing_rps = ing.get("ok_rps")
    vs_hello = ratio(ing_rps, hello_rps)
    rows.append(row(
        "b", "ingestion max throughput, closed loop (--role gateway)", ing_rps, "req/s",
        original={"value": refs["original_ingestion_rps"], "ratio": ratio(ing_rps, refs["original_ingestion_rps"])},
        note=f"p99 {get(ing, 'latency_ms', 'p99')} ms; " + client_note(ing),
    ))
    rows.append(row(
        "b", "ingestion / hello-world", vs_hello, "ratio",
        target={"value": refs["target_ingest_vs_hello"], "ratio": ratio(vs_hello, refs["target_ingest_vs_hello"])},
        met=None if vs_hello is None else vs_hello >= refs["target_ingest_vs_hello"],
    ))
    ceiling = s.get("ingest_ceiling") or {}
    ceiling_rps = ceiling.get("ok_rps")
    rows.append(row(
        "b", "ingestion ceiling: hello world + one XADD per request", ceiling_rps, "req/s",
        note=f"its ratio to hello-world: {ratio(ceiling_rps, hello_rps)}; " + client_note(ceiling),
    ))
    rows.append(row("b", "ingestion / ceiling", ratio(ing_rps, ceiling_rps), "ratio"))

    p99 = get(opn, "latency_ms", "p99")
    rate = opn.get("rate")
    achieved = opn.get("ok_rps")
    on_rate = (
        achieved is not None and rate and achieved >= 0.98 * rate
        and not opn.get("unsent") and not opn.get("errors")
    )
    rows.append(row(
        "c", f"ingestion p99 at {rate:,.0f} req/s, open loop (--role gateway)" if rate else "ingestion p99, open loop",
        p99, "ms",
        target={"value": refs["target_open_p99_ms"], "ratio": ratio(p99, refs["target_open_p99_ms"])},
        met=None if p99 is None else (p99 <= refs["target_open_p99_ms"] and bool(on_rate)),
        note=None if achieved is None else
        f"achieved {achieved:,.0f} req/s, p50 {get(opn, 'latency_ms', 'p50')} ms, "
        f"p99.9 {get(opn, 'latency_ms', 'p99_9')} ms, service-time p99 {get(opn, 'service_ms', 'p99')} ms",
    ))

    dps = e2e.get("deliveries_per_sec")
    rows.append(row(
        "d", "end-to-end deliveries/s (Redis Streams + Redis + MongoDB)", dps, "deliveries/s",
        original={"value": refs["original_workflow_dps"], "ratio": ratio(dps, refs["original_workflow_dps"])},
        target={"value": refs["target_e2e_dps"], "ratio": ratio(dps, refs["target_e2e_dps"])},
        met=None if dps is None else (dps >= refs["target_e2e_dps"] and not e2e.get("timed_out")),
        note=None if not e2e else
        f"{e2e.get('completed'):,} of {e2e.get('accepted'):,} completed in {e2e.get('total_s')} s; "
        f"drained {e2e.get('drain_s')} s after the last post"
        + ("; TIMED OUT" if e2e.get("timed_out") else ""),
    ))
    e2e_ing = get(e2e, "ingest", "ok_rps")
    rows.append(row(
        "d", "ingestion during the end-to-end run (--role all)", e2e_ing, "req/s",
        original={"value": refs["original_ingestion_rps"], "ratio": ratio(e2e_ing, refs["original_ingestion_rps"])},
        note=None if not e2e else f"p99 {get(e2e, 'ingest', 'latency_ms', 'p99')} ms",
    ))

    for point in s.get("pool_sweep") or []:
        r = point.get("result") or {}
        d = r.get("deliveries_per_sec")
        rows.append(row(
            "e", f"pool width {point['consumers']}: deliveries/s", d, "deliveries/s",
            original={"value": refs["original_workflow_dps"], "ratio": ratio(d, refs["original_workflow_dps"])},
            target={"value": refs["target_e2e_dps"], "ratio": ratio(d, refs["target_e2e_dps"])},
            note=f"ingest p99 {get(r, 'ingest', 'latency_ms', 'p99')} ms" + ("; TIMED OUT" if r.get("timed_out") else ""),
        ))

    two = s.get("two_engines") or {}
    two_dps = two.get("deliveries_per_sec")
    rows.append(row(
        "f", "two engine processes on one stream: deliveries/s", two_dps, "deliveries/s",
        original={"value": refs["original_workflow_dps"], "ratio": ratio(two_dps, refs["original_workflow_dps"])},
        note=None if two_dps is None else f"{ratio(two_dps, dps)}× one engine (d); both on the same 2 cores",
    ))

    pk = s.get("packages") or {}
    eng = pk.get("engine") or {}
    node = pk.get("node") or {}
    node_ok = node.get("status") == "ok"
    for cls in ("put", "get"):
        v = get(eng, cls, "ok_rps")
        nv = get(node, cls, "ok_rps") if node_ok else None
        rows.append(row(
            "g", f"packages {cls.upper()} on the engine", v, "req/s",
            original=None if nv is None else {"value": nv, "ratio": ratio(v, nv), "what": "Node.js package service"},
            note=f"p99 {get(eng, cls, 'latency_ms', 'p99')} ms"
            + ("" if nv is None else f"; Node p99 {get(node, cls, 'latency_ms', 'p99')} ms"),
        ))
    total = eng.get("ok_rps")
    node_total = node.get("ok_rps") if node_ok else None
    vs_node = ratio(total, node_total)
    rows.append(row(
        "g", "packages PUT+GET, engine / Node.js service", vs_node, "ratio",
        target={"value": refs["target_packages_vs_node"], "ratio": ratio(vs_node, refs["target_packages_vs_node"])},
        met=None if vs_node is None else vs_node >= refs["target_packages_vs_node"],
        note=None if node_ok else f"Node peer {node.get('status', 'not run')}"
        + (f": {node.get('reason')}" if node.get("reason") else ""),
    ))

    mem = s.get("memory") or {}
    if mem:
        before = mem.get("rss_before_kb", 0) / 1024
        after = mem.get("rss_after_kb", 0) / 1024
        rows.append(row(
            "h", "engine RSS before / after the end-to-end run", f"{before:.0f} / {after:.0f}", "MiB",
            note=f"peak {mem.get('rss_peak_kb', 0) / 1024:.0f} MiB; engine CPU {mem.get('engine_cpu_s')} s "
            f"for {mem.get('deliveries'):,} deliveries",
        ))
    return rows


def assemble(work, out, bench_seconds=None):
    meta = load(os.path.join(work, "meta.json")) or {}
    meta["params"] = load(os.path.join(work, "params.json"))
    if bench_seconds is not None:
        meta["bench_seconds"] = bench_seconds
    sweep = []
    for path in glob.glob(os.path.join(work, "e_sweep_*.json")):
        n = int(os.path.basename(path)[len("e_sweep_"):-len(".json")])
        sweep.append({"consumers": n, "result": load(path)})
    sweep.sort(key=lambda p: p["consumers"])
    scenarios = {
        "hello": load(os.path.join(work, "a_hello.json")),
        "ingest_closed": load(os.path.join(work, "b_ingest_closed.json")),
        "ingest_ceiling": load(os.path.join(work, "b_ingest_ceiling.json")),
        "ingest_open": load(os.path.join(work, "c_ingest_open.json")),
        "e2e": load(os.path.join(work, "d_e2e.json")),
        "pool_sweep": sweep,
        "two_engines": load(os.path.join(work, "f_two_engines.json")),
        "packages": {
            "engine": load(os.path.join(work, "g_packages_engine.json")),
            "node": load(os.path.join(work, "g_packages_node.json")),
        },
        "memory": load(os.path.join(work, "h_memory.json")),
    }
    ing = scenarios["ingest_closed"]
    hello = scenarios["hello"]
    if ing and hello:
        ing["ratio_to_hello"] = ratio(ing.get("ok_rps"), hello.get("ok_rps"))
    ceiling = scenarios["ingest_ceiling"]
    if ing and ceiling:
        ing["ratio_to_ceiling"] = ratio(ing.get("ok_rps"), ceiling.get("ok_rps"))
    two = scenarios["two_engines"]
    if two and scenarios["e2e"]:
        two["ratio_to_one_engine"] = ratio(two.get("deliveries_per_sec"), scenarios["e2e"].get("deliveries_per_sec"))
    result = {
        "meta": meta,
        "references": REFERENCES,
        "scenarios": scenarios,
        "summary": summarize(scenarios),
    }
    os.makedirs(os.path.dirname(os.path.abspath(out)), exist_ok=True)
    with open(out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")


def fmt(v, unit=None):
    if v is None:
        return "—"
    if isinstance(v, str):
        return f"{v} {unit}" if unit else v
    if unit == "ratio":
        return f"{v:.2f}×"
    if isinstance(v, float) and abs(v) < 100 and v != int(v):
        text = f"{v:.2f}"
    else:
        text = f"{v:,.0f}"
    return f"{text} {unit}" if unit else text


def table(path):
    res = load(path)
    if res is None:
        sys.exit(f"cannot read {path}")
    meta = res.get("meta", {})
    m = meta.get("machine", {})
    print(f"Drone delivery end-to-end benchmarks ({'quick' if meta.get('quick') else 'full'} run, "
          f"{meta.get('started_utc')}; {m.get('cpus')} CPUs {m.get('cpu') or ''}, {m.get('mem_gib')} GiB; "
          f"commit {str(meta.get('git_commit'))[:10]}{' + changes' if meta.get('git_dirty') else ''})")
    print()
    print("| | figure | measured | original (ratio) | target (ratio) | met | notes |")
    print("|---|---|---|---|---|---|---|")
    for r in res.get("summary", []):
        unit = r["unit"]
        measured = fmt(r["value"], unit)
        o = r.get("original")
        original = "—" if not o else f"{fmt(o['value'])} ({fmt(o.get('ratio'), 'ratio')})"
        t = r.get("target")
        if not t:
            target = "—"
        else:
            bound = "≤" if "p99" in r["figure"] else "≥"
            tv = f"{t['value']:.0%}" if unit == "ratio" and t["value"] < 1 else (
                f"{t['value']}×" if unit == "ratio" else fmt(t["value"], unit))
            target = f"{bound} {tv} ({fmt(t.get('ratio'), 'ratio')})"
        met = {True: "yes", False: "no", None: "—"}[r.get("met")]
        print(f"| {r['scenario']} | {r['figure']} | {measured} | {original} | {target} | {met} | {r.get('note') or ''} |")
    print()
    print("original: the reference implementation's published figures "
          "(ingestion 1,275 req/s average on 10 replicas; workflow ~1,100 deliveries/s on 35 replicas) "
          "or, for packages, the Node.js package service measured here; everything here runs on this one machine.")


def nice_ceiling(v):
    if v <= 0:
        return 1
    exp = 10 ** math.floor(math.log10(v))
    for m in (1, 1.2, 1.5, 2, 2.5, 3, 4, 5, 6, 8, 10):
        if v <= m * exp:
            return m * exp
    return 10 * exp


def svg(path, out):
    res = load(path)
    if res is None:
        sys.exit(f"cannot read {path}")
    points = []
    for p in res.get("scenarios", {}).get("pool_sweep") or []:
        r = p.get("result") or {}
        points.append((p["consumers"], r.get("deliveries_per_sec"), get(r, "ingest", "latency_ms", "p99")))
    W, H = 760, 470
    left, right, top, bottom = 80, 80, 60, 100
    pw, ph = W - left - right, H - top - bottom
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" '
        'font-family="sans-serif" font-size="12">',
        f'<rect width="{W}" height="{H}" fill="white"/>',
        f'<text x="{W / 2}" y="24" text-anchor="middle" font-size="16">'
        'End-to-end deliveries/s and ingest p99 against consumer pool width</text>',
        f'<text x="{W / 2}" y="42" text-anchor="middle" fill="#555">'
        f'{esc(str(res.get("meta", {}).get("started_utc")))}, '
        f'{"quick" if res.get("meta", {}).get("quick") else "full"} run, Redis Streams + Redis + MongoDB</text>',
    ]
    if not points:
        parts.append(f'<text x="{W / 2}" y="{H / 2}" text-anchor="middle">no pool sweep results</text>')
    else:
        dmax = nice_ceiling(max((d or 0) for _, d, _ in points) * 1.15)
        pmax = nice_ceiling(max((p or 0) for _, _, p in points) * 1.15)
        n = len(points)

        def x(i):
            return left + (pw * (i + 0.5) / n)

        def yd(v):
            return top + ph - ph * (v / dmax)

        def yp(v):
            return top + ph - ph * (v / pmax)

        # Axes and grid.
        parts.append(f'<line x1="{left}" y1="{top + ph}" x2="{left + pw}" y2="{top + ph}" stroke="#333"/>')
        parts.append(f'<line x1="{left}" y1="{top}" x2="{left}" y2="{top + ph}" stroke="#1f77b4"/>')
        parts.append(f'<line x1="{left + pw}" y1="{top}" x2="{left + pw}" y2="{top + ph}" stroke="#d62728"/>')
        for k in range(6):
            fy = top + ph - ph * k / 5
            parts.append(f'<line x1="{left}" y1="{fy:.1f}" x2="{left + pw}" y2="{fy:.1f}" stroke="#eee"/>')
            parts.append(f'<text x="{left - 6}" y="{fy + 4:.1f}" text-anchor="end" fill="#1f77b4">'
                         f'{dmax * k / 5:,.0f}</text>')
            parts.append(f'<text x="{left + pw + 6}" y="{fy + 4:.1f}" fill="#d62728">{pmax * k / 5:g}</text>')
        for i, (c, _, _) in enumerate(points):
            parts.append(f'<text x="{x(i):.1f}" y="{top + ph + 18}" text-anchor="middle">{c}</text>')
        parts.append(f'<text x="{left + pw / 2}" y="{top + ph + 40}" text-anchor="middle">'
                     'consumer pool width (--consumers)</text>')
        parts.append(f'<text transform="translate(20 {top + ph / 2}) rotate(-90)" text-anchor="middle" '
                     'fill="#1f77b4">deliveries/s</text>')
        parts.append(f'<text transform="translate({W - 18} {top + ph / 2}) rotate(90)" text-anchor="middle" '
                     'fill="#d62728">ingest p99 (ms)</text>')
        # Reference lines: the original workflow and the target (when in range).
        for value, label, colour in ((1100, "original workflow ~1,100/s (35 replicas)", "#999"),
                                     (5000, "target 5,000/s", "#2ca02c")):
            if value <= dmax:
                parts.append(f'<line x1="{left}" y1="{yd(value):.1f}" x2="{left + pw}" y2="{yd(value):.1f}" '
                             f'stroke="{colour}" stroke-dasharray="6 4"/>')
                parts.append(f'<text x="{left + pw - 6}" y="{yd(value) - 4:.1f}" text-anchor="end" '
                             f'fill="{colour}">{label}</text>')
        for series, colour, yf, fmtv in (
            (1, "#1f77b4", yd, lambda v: f"{v:,.0f}"),
            (2, "#d62728", yp, lambda v: f"{v:.1f} ms"),
        ):
            pts = [(x(i), yf(p[series])) for i, p in enumerate(points) if p[series] is not None]
            if len(pts) > 1:
                parts.append('<polyline fill="none" stroke-width="2" stroke="{}" points="{}"/>'.format(
                    colour, " ".join(f"{a:.1f},{b:.1f}" for a, b in pts)))
            for i, p in enumerate(points):
                if p[series] is None:
                    continue
                px, py = x(i), yf(p[series])
                parts.append(f'<circle cx="{px:.1f}" cy="{py:.1f}" r="4" fill="{colour}"/>')
                dy = -8 if series == 1 else 16
                parts.append(f'<text x="{px:.1f}" y="{py + dy:.1f}" text-anchor="middle" fill="{colour}" '
                             f'font-size="11">{fmtv(p[series])}</text>')
        # Legend.
        lx, ly = left + pw / 2 - 190, H - 22
        parts.append(f'<line x1="{lx}" y1="{ly - 4}" x2="{lx + 20}" y2="{ly - 4}" stroke="#1f77b4" stroke-width="2"/>')
        parts.append(f'<text x="{lx + 26}" y="{ly}">deliveries/s (left axis)</text>')
        parts.append(f'<line x1="{lx + 200}" y1="{ly - 4}" x2="{lx + 220}" y2="{ly - 4}" stroke="#d62728" stroke-width="2"/>')
        parts.append(f'<text x="{lx + 226}" y="{ly}">ingest p99, ms (right axis)</text>')
    parts.append("</svg>")
    with open(out, "w") as f:
        f.write("\n".join(parts) + "\n")


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def main(argv):
    if len(argv) >= 3 and argv[0] == "assemble":
        secs = None
        if "--bench-seconds" in argv:
            secs = int(argv[argv.index("--bench-seconds") + 1])
        assemble(argv[1], argv[2], secs)
    elif len(argv) == 2 and argv[0] == "table":
        table(argv[1])
    elif len(argv) == 3 and argv[0] == "svg":
        svg(argv[1], argv[2])
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv[1:])
