"""Cells and tables of the benchmark report: Markdown tables, times, percentages, a workload's
rows of systems and its notes (used by the ``bench.report*`` modules)."""

from __future__ import annotations

from typing import Any

from bench.common import fmt_ms


def _get(d: dict, *path: str) -> Any:
    for p in path:
        if not isinstance(d, dict) or p not in d:
            return None
        d = d[p]
    return d


def _note_lines(L: list[str], notes: list[str], absent: list[str]) -> None:
    """A workload's notes, then its absent systems, as list items, then a blank line."""
    L.extend(f"- {n}" for n in notes)
    L.extend(f"- absent: {n}" for n in absent)
    L.append("")


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for r in rows:
        out.append("| " + " | ".join("" if c is None else str(c) for c in r) + " |")
    return "\n".join(out)


def _t(r: dict[str, Any]) -> str:
    if not r.get("available"):
        return "absent"
    s = fmt_ms(r["median_ms"])
    if r.get("extrapolated"):
        s += "*"
    if r.get("lower_bound"):
        s = ">= " + s
    return s


def _pp(r: dict[str, Any]) -> str:
    if r.get("p20_ms") is None or r.get("repeats", 0) < 2:
        return ""
    return f"{fmt_ms(r['p20_ms'])} - {fmt_ms(r['p80_ms'])}"


def _f(x: Any, nd: int = 2, pct: bool = False) -> str:
    if x is None:
        return ""
    if pct:
        return f"{100 * x:.2f}%"
    return f"{x:.{nd}f}"


def _stats(st: dict[str, Any] | None, n: int = 6) -> str:
    if not st:
        return ""
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in list(st.items())[:n])


def _sys_rows(S: dict[str, Any], cols) -> tuple[list[list[Any]], list[str]]:
    avail = [r["median_ms"] for r in S.values() if r.get("available")]
    fastest = min(avail) if avail else None
    rows, absent = [], []
    for name, r in S.items():
        if not r.get("available"):
            absent.append(f"`{name}`: {r.get('reason')}")
            continue
        rel = f"{r['median_ms'] / fastest:,.1f}x" if fastest else ""
        mem = _f(r.get("peak_mem_mb"), 1) if r.get("peak_mem_mb") is not None else ""
        rows.append([f"`{name}`", r.get("device", ""), _t(r), _pp(r), rel, mem] + [c(r) for c in cols])
    return rows, absent


def _notes(S: dict[str, Any]) -> list[str]:
    out = []
    for name, r in S.items():
        if not r.get("available"):
            continue
        if r.get("extrapolated") and r.get("measured_items") is not None and r.get("total_items"):
            out.append(f"`{name}`: measured on {r['measured_items']:,} of {r['total_items']:,} items and scaled"
                       + (f" ({r['note']})" if r.get("note") else ""))
        elif r.get("note"):
            out.append(f"`{name}`: {r['note']}")
    return out
