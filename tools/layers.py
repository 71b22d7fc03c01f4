"""Print the "layer picture" of the mnc package: sizes, import graph, cycles, layering.

Usage:
    python tools/layers.py [--package PATH] [--json] [--layers "a,b < c < d,e"]

Every .py file is parsed with `ast`; ALL imports of package modules count: top level,
in functions (tagged [lazy]), under `if TYPE_CHECKING:` ([type-only]), relative ones.
A module's package is the first component after the root: mnc.ir.graph -> ir,
mnc/cli.py -> cli, mnc/__init__.py -> __init__. Lines are plain counts (like wc -l).
--layers gives groups lowest first, separated by "<", members by ","; an import from a
lower group into a higher one is a violation; packages not listed are "unplaced".
With --layers the exit code is 1 if there are violations or cycles, else 0.
"""

import argparse
import ast
import json
import sys
from collections import Counter, defaultdict
from pathlib import Path


def module_name(root: Path, path: Path) -> str:
    parts = [root.name, *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def package_of(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def resolve(name: str, modules: set[str]) -> str | None:
    """Longest prefix of a dotted name that is a module of the package."""
    prefixes = (name.rsplit(".", i)[0] for i in range(name.count(".") + 1))
    return next((p for p in prefixes if p in modules), None)


class Imports(ast.NodeVisitor):
    def __init__(self, mod: str, is_pkg: bool, modules: set[str]):
        self.mod, self.is_pkg, self.modules, self.depth, self.typing = mod, is_pkg, modules, 0, False
        self.found: list[tuple[str, int, str]] = []  # (target module, line, kind)

    def add(self, name: str, line: int):
        if (target := resolve(name, self.modules)) and target != self.mod:
            kind = "type-only" if self.typing else "lazy" if self.depth else "top"
            self.found.append((target, line, kind))

    def visit_FunctionDef(self, node):  # anything inside a function body is "lazy"
        self.depth += 1
        self.generic_visit(node)
        self.depth -= 1

    visit_AsyncFunctionDef = visit_Lambda = visit_FunctionDef

    def visit_If(self, node):
        if "TYPE_CHECKING" not in (getattr(node.test, "id", 0), getattr(node.test, "attr", 0)):
            return self.generic_visit(node)
        old, self.typing = self.typing, True
        for n in node.body:
            self.visit(n)
        self.typing = old
        for n in node.orelse:
            self.visit(n)

    def visit_Import(self, node):
        for alias in node.names:
            self.add(alias.name, node.lineno)

    def visit_ImportFrom(self, node):
        base = node.module or ""
        if node.level:  # relative: strip (level - 1) parts from this module's package
            pkg = self.mod.split(".") if self.is_pkg else self.mod.split(".")[:-1]
            pkg = pkg[: len(pkg) - node.level + 1]
            base = ".".join(pkg + ([base] if base else []))
        for alias in node.names:  # `from a import b`: b may be a submodule or a name
            self.add(f"{base}.{alias.name}" if base else alias.name, node.lineno)


def tarjan(graph: dict[str, set[str]]) -> list[list[str]]:
    index, low, stack, on_stack, sccs = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph.get(v, ())):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:  # v is the root of an SCC: pop it off the stack
            i = stack.index(v)
            sccs.append(sorted(stack[i:]))
            on_stack.difference_update(stack[i:])
            del stack[i:]

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return [s for s in sccs if len(s) > 1]


def analyse(root: Path, layers: str | None) -> dict:
    files = {module_name(root, p): p for p in sorted(root.rglob("*.py"))}
    modules, lines, edges = set(files), {}, {}  # edges: (src, dst) -> (line, kinds)
    for mod, path in files.items():
        text = path.read_text(encoding="utf-8")
        lines[mod], v = len(text.splitlines()), Imports(mod, path.name == "__init__.py", modules)
        v.visit(ast.parse(text, str(path)))
        for target, line, kind in v.found:  # keep the first line and every kind seen
            first, kinds = edges.get((mod, target), (line, set()))
            edges[mod, target] = (min(first, line), kinds | {kind})
    tag = lambda k: "" if "top" in k else " [type-only]" if k == {"type-only"} else " [lazy]"
    fmt = lambda s, d: f"{s}:{edges[s, d][0]} -> {d}{tag(edges[s, d][1])}"
    mgraph, pgraph, pcount = defaultdict(set), defaultdict(set), Counter()
    for s, d in edges:
        mgraph[s].add(d)
        if (ps := package_of(s)) != (pd := package_of(d)):
            pgraph[ps].add(pd)
            pcount[ps, pd] += 1
    cyc = lambda c, key: {
        "members": c,
        "edges": [fmt(s, d) for s, d in sorted(edges) if key(s) in c and key(d) in c and key(s) != key(d)],
    }
    mod_cycles = [cyc(c, lambda m: m) for c in tarjan(mgraph)]
    pkg_cycles = [cyc(c, package_of) for c in tarjan(pgraph)]
    out = {
        "lines": dict(sorted(lines.items(), key=lambda kv: (-kv[1], kv[0]))),
        "total_lines": sum(lines.values()),
        "package_edges": [{"from": a, "to": b, "count": n} for (a, b), n in sorted(pcount.items())],
        "module_cycles": mod_cycles,
        "package_cycles": pkg_cycles,
    }
    if layers:
        rank = {p.strip(): i for i, g in enumerate(layers.split("<")) for p in g.split(",") if p.strip()}
        pkgs = {package_of(m) for m in modules}
        out["unplaced"], out["declared_but_absent"] = sorted(pkgs - rank.keys()), sorted(rank.keys() - pkgs)
        r = lambda m: rank.get(package_of(m), -1)  # unplaced never violates
        out["violations"] = [fmt(s, d) for s, d in sorted(edges) if -1 < r(s) < r(d)]
    return out


def render(r: dict) -> str:
    out = ["== Lines per module (plain line count, * = 10 largest) =="]
    out += [f"{'*' if i < 10 else ' '} {n:6d}  {m}" for i, (m, n) in enumerate(r["lines"].items())]
    top = sum(list(r["lines"].values())[:10])
    out += [
        f"  {r['total_lines']:6d}  TOTAL ({len(r['lines'])} modules; 10 largest = {top}, "
        f"{100 * top / max(r['total_lines'], 1):.0f}%)",
        "\n== Package dependencies (A -> B: number of distinct module->module imports) ==",
    ]
    out += [f"  {e['from']:>10} -> {e['to']:<10} {e['count']}" for e in r["package_edges"]]
    for key, title in (("module_cycles", "Module-level cycles"), ("package_cycles", "Package-level cycles")):
        out.append(f"\n== {title} (SCCs of size > 1): {len(r[key])} ==")
        for c in r[key]:
            out += [f"  SCC {{{', '.join(c['members'])}}}", *(f"    {e}" for e in c["edges"])]
    if "violations" in r:
        out += [
            f"\n== Layer check: {len(r['violations'])} violation(s) (lower layer importing higher) ==",
            *(f"  {v}" for v in r["violations"]),
            f"  unplaced packages: {', '.join(r['unplaced']) or '(none)'}; "
            f"declared but absent: {', '.join(r['declared_but_absent']) or '(none)'}",
        ]
    return "\n".join(out)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--package", type=Path, default=Path(__file__).resolve().parents[1] / "mnc")
    ap.add_argument("--json", action="store_true", help="print JSON instead of text")
    ap.add_argument("--layers", help='e.g. "errors,io < ir < passes < cli" (lowest first)')
    args = ap.parse_args()
    r = analyse(args.package.resolve(), args.layers)
    print(json.dumps(r, indent=2) if args.json else render(r))
    return int(bool(args.layers and (r["violations"] or r["module_cycles"] or r["package_cycles"])))


if __name__ == "__main__":
    sys.exit(main())
