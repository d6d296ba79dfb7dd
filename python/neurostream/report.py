"""What a run reports: rows, bytes, busy time and latency per node, devices, drops."""
from __future__ import annotations

import html
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Tuple

__all__ = ["Report", "NodeReport"]


@dataclass(frozen=True)
class NodeReport:
    """Counters of one node (``sources.NAME``, ``operators.NAME`` or ``sinks.NAME``)."""

    name: str
    rows_in: int
    rows_out: int
    #: Payload bytes received.
    bytes_in: int
    #: Seconds spent in the node's own code, summed over workers.
    busy_s: float
    #: Sinks: arrival-to-written latency in milliseconds (``p50``, ``p95``, ``p99``, ``max``,
    #: ``frames``), or None.
    latency_ms: Optional[Dict[str, float]] = None
    #: The device it computed on (operators and computing sinks), or None.
    device: Optional[str] = None
    #: Seconds busy per worker (global worker index) of this process: an idle worker beside a
    #: busy one shows where the pipeline does not spread.
    busy_s_by_worker: Optional[Dict[int, float]] = None

    @property
    def rows(self) -> int:
        """Rows through the node: out for sources, in for sinks, the larger otherwise."""
        return max(self.rows_in, self.rows_out)


@dataclass(frozen=True)
class Report:
    """The report of a finished run (this process)."""

    #: Wall time of the run, seconds.
    elapsed_s: float
    #: Workers in this process and in all processes.
    workers: Tuple[int, int]
    #: Per node, keyed ``sources.NAME`` / ``operators.NAME`` / ``sinks.NAME``.
    nodes: Dict[str, NodeReport]
    #: Rows dropped for NaN/Inf per source (``on_invalid = "drop"``).
    dropped_invalid: Dict[str, int] = field(default_factory=dict)
    #: Per source with a drop policy: (rows read, rows dropped while the pipeline was behind).
    overload: Dict[str, Tuple[int, int]] = field(default_factory=dict)
    #: Lines from the sinks (files written, summaries).
    sink_lines: List[str] = field(default_factory=list)
    #: True when the run was stopped early (``stop()`` or Ctrl-C).
    stopped: bool = False
    #: Collected outputs (``run(collect=...)``) as ``pyarrow.Table``, by node (``node/table``
    #: for one table of a node that writes several).
    tables: Dict[str, Any] = field(default_factory=dict)

    @classmethod
    def _from_native(cls, d: Dict[str, Any]) -> "Report":
        devices = d.get("devices", {})
        nodes = {
            name: NodeReport(name=name, device=devices.get(name), **n) for name, n in d["nodes"].items()
        }
        for name, dev in devices.items():
            nodes.setdefault(name, NodeReport(name, 0, 0, 0, 0.0, None, dev))
        return cls(
            elapsed_s=d["elapsed_s"],
            workers=tuple(d["workers"]),
            nodes=nodes,
            dropped_invalid=dict(d.get("dropped_invalid", {})),
            overload={k: tuple(v) for k, v in d.get("overload", {}).items()},
            sink_lines=list(d.get("sink_lines", [])),
            stopped=bool(d.get("stopped", False)),
        )

    @property
    def devices(self) -> Dict[str, str]:
        """The device of each operator (and computing sink)."""
        return {n: r.device for n, r in self.nodes.items() if r.device}

    def rows(self, node: str) -> int:
        """Rows through ``node`` (``"sinks.out"``, or a bare name when it is unambiguous)."""
        return self[node].rows

    def __getitem__(self, node: str) -> NodeReport:
        if node in self.nodes:
            return self.nodes[node]
        matches = [r for n, r in self.nodes.items() if n.split(".", 1)[1] == node]
        if len(matches) == 1:
            return matches[0]
        raise KeyError(f"no node {node!r} in the report; nodes: {', '.join(self.nodes)}")

    def _rows_per_s(self, r: NodeReport) -> float:
        return r.rows / self.elapsed_s if self.elapsed_s > 0 else 0.0

    def __repr__(self) -> str:
        head = f"Report: {self.elapsed_s:.2f} s, {self.workers[0]} worker(s) here, {self.workers[1]} in all"
        if self.stopped:
            head += " (stopped early)"
        lines = [head]
        for name, r in self.nodes.items():
            lat = ""
            if r.latency_ms:
                lat = f"  p50 {r.latency_ms['p50']:.3f} ms  p99 {r.latency_ms['p99']:.3f} ms"
            dev = f"  [{r.device}]" if r.device else ""
            lines.append(
                f"  {name:<24} in {r.rows_in:>10}  out {r.rows_out:>10}  {r.bytes_in / 1e6:>8.1f} MB"
                f"  busy {r.busy_s:>7.3f} s  {self._rows_per_s(r):>12.0f} rows/s{lat}{dev}"
            )
        for name, n in self.dropped_invalid.items():
            lines.append(f"  dropped {n} rows with NaN/Inf from {name}")
        for name, (read, dropped) in self.overload.items():
            lines.append(f"  overload {name}: read {read}, dropped {dropped} while the pipeline was behind")
        lines.extend(f"  {line}" for line in self.sink_lines)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        e = html.escape
        rows = []
        for name, r in self.nodes.items():
            lat = ""
            if r.latency_ms:
                lat = f"{r.latency_ms['p50']:.3f} / {r.latency_ms['p99']:.3f}"
            rows.append(
                "<tr>"
                f"<td><code>{e(name)}</code></td><td>{r.rows_in:,}</td><td>{r.rows_out:,}</td>"
                f"<td>{r.bytes_in / 1e6:.1f}</td><td>{r.busy_s:.3f}</td><td>{self._rows_per_s(r):,.0f}</td>"
                f"<td>{lat}</td><td>{e(r.device or '')}</td>"
                "</tr>"
            )
        notes = [f"dropped {n} NaN/Inf rows from {e(k)}" for k, n in self.dropped_invalid.items()]
        notes += [f"{e(k)}: dropped {d} of {r} rows (behind)" for k, (r, d) in self.overload.items()]
        notes += [e(line) for line in self.sink_lines]
        stopped = " &middot; <b>stopped early</b>" if self.stopped else ""
        return (
            f"<div><b>neurostream run</b>: {self.elapsed_s:.2f} s, {self.workers[0]} worker(s){stopped}"
            "<table><thead><tr><th>node</th><th>rows in</th><th>rows out</th><th>MB in</th>"
            "<th>busy s</th><th>rows/s</th><th>latency p50 / p99 ms</th><th>device</th></tr></thead>"
            f"<tbody>{''.join(rows)}</tbody></table>"
            + "".join(f"<div>{n}</div>" for n in notes)
            + "</div>"
        )
