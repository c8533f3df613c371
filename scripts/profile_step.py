"""Where one train step's time goes: the compiled step run under the JAX profiler, its ops grouped.

    python scripts/profile_step.py --config configs/beauty.yaml [key=value ...]
    python scripts/profile_step.py --model small --batch 16 --seq-len 136 --vocab 32128

Same arguments as scripts/bench_train.py (same setup, same batch). Runs the jitted train step
(or, with `--part forward`, the loss alone: bench_train.py's forward pass) `--steps` times
under `jax.profiler.trace`, reads the trace's per-op events and joins them with the compiled
HLO, so each op gets
  - a phase, from the name stack XLA keeps in each op's metadata: `forward`, `backward`
    (autodiff's transposed ops), `output layer` (the tied cross-entropy, whose gradient is
    made in its forward pass: training/loss.py), `optimizer`, `other`;
  - a sublayer (`attention`, `mlp`, `output layer`, `optimizer`, `other`);
  - a kind: `matmul` (a dot, or a fusion around one), `copy` (layout copies and transposes),
    `reduce`, `gather/scatter`, `elementwise`, `while` excluded (its body's ops are counted).
Times are per step. `op_s` sums op durations, which may overlap (the CPU runs independent ops
side by side); `busy_s` is the time at least one op runs and `idle_s` the rest of the step.
XLA:CPU's generic dot (a `dot` op not inside a matmul-library fusion) hands its work to a
thread pool and its event ends long before the work does, while other ready ops go on: its
time shows as idle gaps later. So each idle gap is charged (`idle_after_s`) to the generic dot
that started last before it in the step, or, before the step's first one, to the op that ended
last before the gap (thunk dispatch, waiting).
Prints one JSON object: totals, per-phase and per-sublayer sums by kind, and the `--top`
costliest ops (time plus idle charged) with their source (the op's name stack).
"""

from __future__ import annotations

import collections
import glob
import gzip
import json
import os
import re
import sys
import tempfile

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_train  # noqa: E402  (the sibling script: its arguments and setups)

from recsys_jax.huge_pages import restart_with_huge_pages  # noqa: E402

_HEADER = re.compile(r"^(?:ENTRY )?%?([\w.\-]+) .*\{$")
_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%([\w.\-]+) = \S+(?: \S+)*? ([\w\-]+)\(")
_CONTAINERS = {"while", "conditional", "call"}


def hlo_ops(text: str) -> dict[str, dict]:
    """name -> {"kind", "pooled" (runs in the thread pool: a generic dot), "source"} for every
    instruction of a compiled module's text."""
    bodies, current = collections.defaultdict(list), None
    for line in text.splitlines():
        header = _HEADER.match(line)
        if header:
            current = header.group(1)
        elif current is not None:
            bodies[current].append(line)
    ops = {}
    for lines in bodies.values():
        for line in lines:
            match = _INSTRUCTION.match(line)
            if not match:
                continue
            name, opcode = match.groups()
            called = re.search(r"calls=%([\w.\-]+)", line)
            body = "\n".join(bodies.get(called.group(1), [])) if called else line
            source = re.search(r'op_name="([^"]*)"', line)
            ops[name] = {
                "kind": _kind(name, opcode, body),
                "pooled": opcode in ("dot", "convolution"),
                "source": source.group(1) if source else "",
            }
    return ops


def _kind(name: str, opcode: str, body: str) -> str:
    if opcode in _CONTAINERS:
        return "while"
    if re.search(r" (dot|convolution)\(", body) or opcode in ("dot", "convolution"):
        return "matmul"
    if opcode in ("copy", "transpose") or re.match(r"(transpose|copy)", name):
        return "copy"
    if re.search(r" (gather|scatter|dynamic-update-slice|dynamic-slice)\(", body):
        return "gather/scatter"
    if re.search(r" (reduce|reduce-window)\(", body):
        return "reduce"
    return "elementwise"


_SCOPES = (  # named scopes in the model, the loss and the update (a name stack, e.g.
    # "jit(step)/transpose(jvp(mlp))/dot_general")
    ("optimizer", "optimizer"),
    ("output_layer", "output layer"),
    ("attention", "attention"),
    ("mlp", "mlp"),
)


def _scope(source: str) -> str | None:
    for scope, name in _SCOPES:
        if re.search(rf"(?<!\w){scope}(?!\w)", source):
            return name
    return None


def phase(source: str, untransformed: str = "other") -> str:
    """Training phase of an op from its name stack (see the module docstring); ops outside
    autodiff's transforms are `untransformed` (all of them "forward" when the loss is alone)."""
    scope = _scope(source)
    if scope in ("optimizer", "output layer"):
        return scope
    if "transpose(" in source:
        return "backward"
    return "forward" if "jvp(" in source else untransformed


def sublayer(source: str) -> str:
    return _scope(source) or "other"


def summarize(
    events: list[dict], windows: list[tuple[float, float]], ops: dict, untransformed="other"
) -> dict:
    """Per-step sums of the trace `events` (Chrome-trace "X" events, microseconds) that fall in
    the step `windows` (start, end) and name an op of `ops` (`hlo_ops`); `untransformed`: see
    `phase`."""
    steps = len(windows)
    timed = sorted(
        (e for e in events if e.get("ph") == "X" and ops.get(e.get("name"), {}).get("kind")),
        key=lambda e: e["ts"],
    )
    timed = [e for e in timed if ops[e["name"]]["kind"] != "while"]
    per_op = collections.defaultdict(lambda: {"s": 0.0, "calls": 0, "idle_after_s": 0.0})
    busy = idle = 0.0
    for start, end in windows:
        inside = [e for e in timed if start <= e["ts"] < end]
        reach, last, pooled = start, None, None
        for e in inside:
            if e["ts"] > reach:
                if pooled or last:
                    per_op[pooled or last]["idle_after_s"] += (e["ts"] - reach) / 1e6
                idle += e["ts"] - reach
            if ops[e["name"]]["pooled"]:
                pooled = e["name"]
            stop = e["ts"] + e["dur"]
            busy += max(0.0, stop - max(reach, e["ts"]))
            if stop > reach:
                reach, last = stop, e["name"]
            per_op[e["name"]]["s"] += e["dur"] / 1e6
            per_op[e["name"]]["calls"] += 1
        if end > reach and (pooled or last):
            per_op[pooled or last]["idle_after_s"] += (end - reach) / 1e6
        idle += max(0.0, end - reach)
    wall = sum(end - start for start, end in windows)

    def grouped(key) -> dict:
        sums = collections.defaultdict(lambda: collections.defaultdict(float))
        for name, t in per_op.items():
            kind = ops[name]["kind"]
            sums[key(ops[name]["source"])][kind] += t["s"] / steps
            sums[key(ops[name]["source"])]["idle_after"] += t["idle_after_s"] / steps
        return {g: {k: round(v, 7) for k, v in sorted(d.items())} for g, d in sorted(sums.items())}

    kinds = collections.defaultdict(float)
    for name, t in per_op.items():
        kinds[ops[name]["kind"]] += t["s"] / steps
    return {
        "step_s": round(wall / steps / 1e6, 7),
        "op_s": round(sum(t["s"] for t in per_op.values()) / steps, 7),
        "busy_s": round(busy / steps / 1e6, 7),
        "idle_s": round(idle / steps / 1e6, 7),
        "ops_per_step": round(sum(t["calls"] for t in per_op.values()) / steps, 1),
        "kinds_s": {k: round(v, 7) for k, v in sorted(kinds.items(), key=lambda kv: -kv[1])},
        "phases_s": grouped(lambda source: phase(source, untransformed)),
        "sublayers_s": grouped(sublayer),
        "_per_op": per_op,
    }


def top_ops(per_op: dict, ops: dict, steps: int, count: int, untransformed="other") -> list[dict]:
    ranked = sorted(per_op.items(), key=lambda kv: -(kv[1]["s"] + kv[1]["idle_after_s"]))
    return [
        {
            "op": name,
            "kind": ops[name]["kind"],
            "phase": phase(ops[name]["source"], untransformed),
            "ms": round(1e3 * t["s"] / steps, 3),
            "idle_after_ms": round(1e3 * t["idle_after_s"] / steps, 3),
            "calls": round(t["calls"] / steps, 1),
            "source": ops[name]["source"],
        }
        for name, t in ranked[:count]
    ]


def profile(s: bench_train.Setup, steps: int, part: str, trace_dir: str) -> tuple[list, list, str]:
    """(trace events, step windows in trace time, compiled HLO text) of `steps` runs of the
    train step (`part` "step") or of the loss alone ("forward", as bench_train.py times it)."""
    if part == "forward":
        params = s.state["params"]
        compiled = jax.jit(bench_train.loss_alone(s)).lower(params).compile()
        run = lambda: compiled(params)  # noqa: E731
    else:
        held = {"state": jax.tree.map(jnp.copy, s.state)}
        compiled = jax.jit(bench_train.step_function(s), donate_argnums=(0,))
        compiled = compiled.lower(held["state"], s.frozen, s.batch).compile()

        def run():
            held["state"], metrics = compiled(held["state"], s.frozen, s.batch)
            return held["state"], metrics

    for _ in range(2):  # warm caches and the allocator
        jax.block_until_ready(run())
    with jax.profiler.trace(trace_dir, create_perfetto_trace=True):
        for i in range(steps):
            with jax.profiler.TraceAnnotation(f"profile_step_{i}"):
                jax.block_until_ready(run())
    (path,) = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)
    with gzip.open(path) as f:
        events = json.load(f)["traceEvents"]
    windows = sorted(
        (e["ts"], e["ts"] + e["dur"])
        for e in events
        if e.get("ph") == "X" and str(e.get("name", "")).startswith("profile_step_")
    )
    if len(windows) != steps:
        raise RuntimeError(f"found {len(windows)} of {steps} step annotations in {path}")
    return events, windows, compiled.as_text()


def main():
    parser = bench_train.build_parser(__doc__.split("\n")[0])
    parser.add_argument("--top", type=int, default=15, help="how many of the costliest ops to list")
    parser.add_argument(
        "--part",
        choices=["step", "forward"],
        default="step",
        help="the train step, or the loss alone (bench_train.py's forward pass)",
    )
    args = parser.parse_args()
    with bench_train.setup_for(args, parser) as s, tempfile.TemporaryDirectory() as trace_dir:
        events, windows, text = profile(s, args.steps, args.part, trace_dir)
        name = s.name
    ops = hlo_ops(text)
    untransformed = "forward" if args.part == "forward" else "other"
    summary = summarize(events, windows, ops, untransformed)
    per_op = summary.pop("_per_op")
    summary["top"] = top_ops(per_op, ops, args.steps, args.top, untransformed)
    device = jax.devices()[0].device_kind
    print(json.dumps({"setup": name, "part": args.part, "device": device, **summary}))


if __name__ == "__main__":
    restart_with_huge_pages()  # as training runs: recsys_jax/huge_pages.py
    main()
