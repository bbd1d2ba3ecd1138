#!/usr/bin/env python3
"""Prints the dependency graph between the top-level modules of a crate's
`src/` (from `crate::x` paths and `super::` uses in submodules) and exits
non-zero if it has a cycle.

    scripts/module-graph.py actors/src gateway/src
"""
import os
import re
import sys


def modules(src):
    out = {}
    for name in sorted(os.listdir(src)):
        path = os.path.join(src, name)
        if name in ("lib.rs", "main.rs", "mod.rs"):
            continue
        if name.endswith(".rs"):
            out[name[:-3]] = [path]
        elif os.path.isdir(path):
            files = []
            for root, _, fs in os.walk(path):
                files += [os.path.join(root, f) for f in fs if f.endswith(".rs")]
            out[name] = files
    return out


def strip_tests(text):
    # Test modules may use anything; the graph is about production code.
    cut = re.search(r"#\[cfg\(test\)\]\s*mod tests\s*\{", text)
    return text[: cut.start()] if cut else text


def crate_path(src):
    """`crate::domain::` for `actors/src/domain`, `crate::` for `actors/src`."""
    parts = os.path.normpath(src).split(os.sep)
    inner = parts[parts.index("src") + 1:] if "src" in parts else []
    return r"\bcrate::" + "".join(p + "::" for p in inner)


def graph(src):
    mods = modules(src)
    prefix = crate_path(src)
    edges = {m: set() for m in mods}
    for m, files in mods.items():
        for f in files:
            if f.endswith(os.sep + "tests.rs"):
                continue
            text = strip_tests(open(f, encoding="utf-8").read())
            text = re.sub(r"//.*", "", text)
            for dep in re.findall(prefix + r"(\w+)", text):
                if dep in mods and dep != m:
                    edges[m].add(dep)
            if f == os.path.join(src, m + ".rs") or f == os.path.join(src, m, "mod.rs"):
                for dep in re.findall(r"\bsuper::(\w+)", text):
                    if dep in mods and dep != m:
                        edges[m].add(dep)
    return edges


def cycle(edges):
    state = {}
    stack = []

    def visit(n):
        state[n] = 1
        stack.append(n)
        for d in sorted(edges[n]):
            if state.get(d) == 1:
                return stack[stack.index(d):] + [d]
            if d not in state:
                found = visit(d)
                if found:
                    return found
        stack.pop()
        state[n] = 2
        return None

    for n in sorted(edges):
        if n not in state:
            found = visit(n)
            if found:
                return found
    return None


status = 0
for src in sys.argv[1:]:
    edges = graph(src)
    print(f"{src}:")
    for m in sorted(edges):
        print(f"  {m} -> {', '.join(sorted(edges[m])) or '-'}")
    c = cycle(edges)
    if c:
        print(f"  CYCLE: {' -> '.join(c)}")
        status = 1
    else:
        print("  no cycles")
sys.exit(status)
