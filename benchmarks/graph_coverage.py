"""Graph coverage: which hand-written CIFAR architectures each tool prunes correctly, beside
Torch-Pruning 1.6.1, on the same machine and the same seeded weights.

The models are the 19 fixtures of tests/graph/architectures.py (3x32x32 input, 10 logits,
written the plain-PyTorch way, none of them known to either tool). For every model, on one
thread, with the weights of ``torch.manual_seed(0)``, BatchNorm statistics and affine parameters
randomized as tests/graph/helpers.py ``randomize`` does (eval mode), and the input
``torch.randn(2, 3, 32, 32)`` drawn from seed 0:

- torchslim: ``build_graph``, ``FilterNormPruner(0.3)`` (L1 filter norm, 30 % of every prunable
  channel group), the masked output, ``thin``, then the thinned output. The check of
  tests/graph/test_architectures.py: it runs, same output shape, fewer MACs, and the thinned
  output equals the masked output within 1e-5 (removed channels contributed nothing).
- Torch-Pruning: its README usage, ``tp.pruner.MagnitudePruner`` (in 1.6.1 an alias of
  ``BasePruner``) with ``MagnitudeImportance(p=1)``, ``pruning_ratio=0.3``, the classifier (the
  last ``nn.Linear``, or the last conv if there is none) in ``ignored_layers``, defaults otherwise
  (local pruning, no ``round_to``), the groups taken one by one from ``step(interactive=True)``
  and pruned. Every parameter slice Torch-Pruning removes is recorded (its pruning functions all
  cut parameters through ``BasePruningFunc._prune_parameter_and_grad``, wrapped here), checked
  against the pruned parameters, and the same slices are zeroed in a second instance of the
  model: the masked reference, compared with the pruned model as for torchslim.

Any exception is a result: its type and first line are recorded as they are, with the stage at
which it happened. A tool still running after ``--time-limit`` seconds (default 60) on one model
is stopped by this script, recorded as ``TimeLimitExceeded`` (raised here, not by the tool) with
the tool's functions it was in. Seconds are the tool's own work (graph, ranking, pruning,
thinning), not the checks.

Writes benchmarks/results/graph_coverage.{json,md}. Run from the repository root after
``make install`` and ``.venv/bin/pip install torch-pruning==1.6.1`` (the ``bench`` extra):

    .venv/bin/python benchmarks/graph_coverage.py [--time-limit SECONDS]
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import signal
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # tests/ is a package at the repository root

from tests.graph.architectures import ARCHITECTURES  # noqa: E402
from tests.graph.helpers import randomize  # noqa: E402

from torchslim.analysis import summarize  # noqa: E402
from torchslim.core.fileio import atomic_write_text  # noqa: E402
from torchslim.graph import build_graph  # noqa: E402
from torchslim.pipelines.common import machine_meta  # noqa: E402
from torchslim.pruning import Masks  # noqa: E402
from torchslim.pruning.structured import FilterNormPruner  # noqa: E402
from torchslim.pruning.thinning import thin  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
SHAPE = (3, 32, 32)
RATIO = 0.3
TOLERANCE = 1e-5
TP_VERSION = importlib.metadata.version("torch-pruning")
BOUNDARY_REASONS = ("model input", "model output")


def seeded(factory: Callable[[], nn.Module]) -> nn.Module:
    """The model every tool starts from: seed 0, randomized BatchNorm, eval mode."""
    torch.manual_seed(0)
    return randomize(factory())


def error_text(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0] if lines else ''}".rstrip(": ")


class TimeLimitExceeded(Exception):
    """Raised by this benchmark (not by a tool) when a tool runs past ``--time-limit``."""


@contextmanager
def time_limit(seconds: float) -> Iterator[None]:
    """Stop the block after ``seconds`` with :class:`TimeLimitExceeded`, naming the tool's
    functions on the stack, outermost first."""

    def stop(signum, frame):
        chain = []
        while frame is not None:
            if "torch_pruning" in frame.f_code.co_filename or (
                    "torchslim" in frame.f_code.co_filename and "benchmarks" not in
                    frame.f_code.co_filename):
                chain.insert(0, frame.f_code.co_qualname)
            frame = frame.f_back
        where = f" in {' > '.join(dict.fromkeys(chain))}" if chain else ""
        raise TimeLimitExceeded(f"still running after {seconds:g} s{where}")

    previous = signal.signal(signal.SIGALRM, stop)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def empty_row(name: str, tool: str, macs_before: int) -> dict:
    return {"model": name, "tool": tool, "runs": False, "output_shape": None,
            "same_output_shape": False, "macs_before": macs_before, "macs_after": None,
            "params_after": None, "max_abs_difference": None, "difference_measured": False,
            "masked_vs_unpruned": None, "seconds": None, "error": None, "error_stage": None,
            "correct": False}


def judge(row: dict, expected_shape: list[int]) -> None:
    row["same_output_shape"] = row["output_shape"] == expected_shape
    row["correct"] = bool(
        row["runs"] and row["same_output_shape"] and row["macs_after"] is not None
        and row["macs_after"] < row["macs_before"]
        and (not row["difference_measured"] or row["max_abs_difference"] <= TOLERANCE)
    )


def run_torchslim(name: str, factory, x: torch.Tensor, reference: torch.Tensor,
                  macs_before: int, limit: float) -> dict:
    row = empty_row(name, "torchslim", macs_before)
    row.update(tracer=None, groups=None, groups_pruned=None, groups_nothing_removed=None,
               channels_removed=None, unprunable=None)
    model = seeded(factory)
    stage = "graph"
    begun = time.perf_counter()
    with time_limit(limit):
        try:
            start = time.perf_counter()
            graph = build_graph(model, x[:1])
            row["tracer"] = graph.frontend
            stage = "pruning"
            removed = FilterNormPruner(RATIO).apply(graph, Masks(model))
            seconds = time.perf_counter() - start
            row["groups"] = len(graph.groups)
            row["groups_pruned"] = sum(1 for chosen in removed.values() if chosen)
            row["groups_nothing_removed"] = [g for g, chosen in removed.items() if not chosen]
            row["channels_removed"] = sum(len(chosen) for chosen in removed.values())
            row["unprunable"] = {group: reason for group, reason in graph.unprunable().items()
                                 if reason not in BOUNDARY_REASONS}
            stage = "masked forward"
            with torch.no_grad():
                masked = model(x)
            row["masked_vs_unpruned"] = (masked - reference).abs().max().item()
            stage = "thinning"
            start = time.perf_counter()
            thin(model, x[:1])
            row["seconds"] = round(seconds + time.perf_counter() - start, 3)
            stage = "forward of the thinned model"
            with torch.no_grad():
                thinned = model(x)
            row["runs"] = True
            row["output_shape"] = list(thinned.shape)
            if thinned.shape == masked.shape:
                row["max_abs_difference"] = (thinned - masked).abs().max().item()
                row["difference_measured"] = True
            stage = "MACs of the thinned model"
            summary = summarize(model, SHAPE)
            row["macs_after"], row["params_after"] = summary.macs, summary.params
        except Exception as error:  # a failure is a result here
            row["error"], row["error_stage"] = error_text(error), stage
            row["seconds"] = row["seconds"] or round(time.perf_counter() - begun, 3)
    judge(row, list(reference.shape))
    return row


def classifier(model: nn.Module) -> nn.Module:
    """The last ``nn.Linear`` in ``model.modules()``, or the last conv if there is none."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return linears[-1] if linears else [m for m in model.modules()
                                        if isinstance(m, nn.modules.conv._ConvNd)][-1]


class SliceRecorder:
    """Records, per parameter of ``model``, the original indices along each dim that survive
    Torch-Pruning: every pruning function of Torch-Pruning 1.6.1 replaces a parameter by
    ``BasePruningFunc._prune_parameter_and_grad(weight, keep_idxs, dim)``, which is wrapped here
    while the recorder is entered."""

    def __init__(self, model: nn.Module) -> None:
        self.original = {n: p.detach().clone() for n, p in model.named_parameters()}
        self.kept = {n: [list(range(size)) for size in p.shape]
                     for n, p in model.named_parameters()}
        self.current = {id(p): (p, n) for n, p in model.named_parameters()}
        self.unknown = 0

    def __enter__(self) -> SliceRecorder:
        from torch_pruning.pruner import function

        self._cls = function.BasePruningFunc
        self._original_fn = original_fn = self._cls._prune_parameter_and_grad
        recorder = self

        def recording(pruner, weight, keep_idxs, pruning_dim):
            pruned = original_fn(pruner, weight, keep_idxs, pruning_dim)
            entry = recorder.current.get(id(weight))
            if entry is None or entry[0] is not weight:
                recorder.unknown += 1
                return pruned
            kept = recorder.kept[entry[1]]
            kept[pruning_dim] = [kept[pruning_dim][int(k)] for k in keep_idxs]
            recorder.current[id(pruned)] = (pruned, entry[1])
            return pruned

        self._cls._prune_parameter_and_grad = recording
        return self

    def __exit__(self, *exc) -> None:
        self._cls._prune_parameter_and_grad = self._original_fn

    def reliable(self, model: nn.Module) -> bool:
        """Every parameter of the pruned ``model`` is exactly its original indexed by the
        recorded surviving indices (so the recorded slices are the ones removed)."""
        params = dict(model.named_parameters())
        if self.unknown or params.keys() != self.original.keys():
            return False
        for name, original in self.original.items():
            expected = original
            for dim, kept in enumerate(self.kept[name]):
                expected = expected.index_select(dim, torch.tensor(kept, dtype=torch.long))
            if expected.shape != params[name].shape or not torch.equal(expected,
                                                                        params[name].detach()):
                return False
        return True

    def mask(self, model: nn.Module) -> nn.Module:
        """Zero, in an unpruned instance, every parameter slice that was removed."""
        with torch.no_grad():
            for name, param in model.named_parameters():
                for dim, kept in enumerate(self.kept[name]):
                    gone = sorted(set(range(param.shape[dim])) - set(kept))
                    if gone:
                        param.index_fill_(dim, torch.tensor(gone, dtype=torch.long), 0.0)
        return model


def run_torch_pruning(name: str, factory, x: torch.Tensor, reference: torch.Tensor,
                      macs_before: int, limit: float) -> dict:
    import torch_pruning as tp

    row = empty_row(name, f"Torch-Pruning {TP_VERSION}", macs_before)
    row.update(groups_pruned=None, difference_note=None)
    model = seeded(factory)
    stage = "pruner construction"
    begun = time.perf_counter()
    with time_limit(limit):
        try:
            recorder = SliceRecorder(model)
            start = time.perf_counter()
            pruner = tp.pruner.MagnitudePruner(
                model, example_inputs=x[:1], importance=tp.importance.MagnitudeImportance(p=1),
                pruning_ratio=RATIO, ignored_layers=[classifier(model)],
            )
            row["groups_pruned"] = 0
            with recorder:
                groups = pruner.step(interactive=True)
                while True:
                    stage = "pruning (scoring or forming the next group)"
                    group = next(groups, None)
                    if group is None:
                        break
                    root = pruner.DG._module2name[group[0].dep.target.module]
                    stage = f"pruning (group of {root})"
                    group.prune()
                    row["groups_pruned"] += 1
            row["seconds"] = round(time.perf_counter() - start, 3)
            stage = "forward of the pruned model"
            with torch.no_grad():
                pruned = model(x)
            row["runs"] = True
            row["output_shape"] = list(pruned.shape)
            if recorder.reliable(model):
                with torch.no_grad():
                    masked = recorder.mask(seeded(factory))(x)
                row["masked_vs_unpruned"] = (masked - reference).abs().max().item()
                if masked.shape == pruned.shape:
                    row["max_abs_difference"] = (pruned - masked).abs().max().item()
                    row["difference_measured"] = True
            else:
                row["difference_note"] = "removed slices could not be recovered exactly"
            stage = "MACs of the pruned model"
            summary = summarize(model, SHAPE)
            row["macs_after"], row["params_after"] = summary.macs, summary.params
        except Exception as error:  # a peer's failure is a result here, not a bug to hide
            row["error"], row["error_stage"] = error_text(error), stage
            row["seconds"] = row["seconds"] or round(time.perf_counter() - begun, 3)
    judge(row, list(reference.shape))
    return row


def macs_cell(before: int, after: int | None) -> str:
    if after is None:
        return "—"
    return f"{after:,} ({100 * after / before:.0f} %)"


def verdict(row: dict) -> str:
    if row["correct"]:
        return f"yes (max diff {row['max_abs_difference']:.1e})" if row["difference_measured"] \
            else "yes (difference not measured)"
    if row["error"] and row["error"].startswith(TimeLimitExceeded.__name__):
        return (f"no: did not finish, stopped by this benchmark after {row['seconds']:.0f} s "
                f"({row['error_stage']})")
    if row["error"]:
        error = row["error"] if len(row["error"]) <= 100 else row["error"][:97] + "..."
        return f"no: {row['error_stage']}: {error}".replace("|", "\\|")
    problems = []
    if not row["same_output_shape"]:
        problems.append(f"output shape {row['output_shape']}")
    if row["macs_after"] is not None and row["macs_after"] >= row["macs_before"]:
        problems.append("MACs not reduced")
    if row["difference_measured"] and row["max_abs_difference"] > TOLERANCE:
        problems.append(f"max diff {row['max_abs_difference']:.1e} from the masked model")
    return "no: " + "; ".join(problems)


def to_markdown(rows: list[dict], meta: dict) -> str:
    ours = {r["model"]: r for r in rows if r["tool"] == "torchslim"}
    theirs = {r["model"]: r for r in rows if r["tool"] != "torchslim"}
    tp_name = f"Torch-Pruning {TP_VERSION}"
    lines = [
        "# Graph coverage: torchslim beside Torch-Pruning on hand-written architectures",
        "",
        f"The {len(ours)} CIFAR-sized models of `tests/graph/architectures.py` (3x32x32 input, "
        "10 classes), the same seeded weights for both tools (seed 0, BatchNorm statistics and "
        "affine parameters randomized, eval mode), 30 % of the channels of every group removed "
        "by L1 filter magnitude. torchslim: `FilterNormPruner(0.3)` on `build_graph`, then "
        f"`thin`. {tp_name}: `tp.pruner.MagnitudePruner` (`BasePruner`) with "
        "`MagnitudeImportance(p=1)`, `pruning_ratio=0.3`, the classifier ignored, defaults "
        "otherwise. *Correct* means: the pruned model runs, gives the same output shape, has "
        f"fewer MACs, and its output is within {TOLERANCE:g} of the masked model's (the same "
        "channels zeroed instead of removed: for Torch-Pruning, the parameter slices it removed, "
        "recorded during pruning). Errors are quoted as raised (type and first line, shortened "
        "here; in full in `graph_coverage.json`), with the stage at which they happened; a tool "
        f"still running after {meta['time_limit_s']:g} s on one model is stopped by the script "
        "(recorded in the JSON as `TimeLimitExceeded`, with the functions it was in). "
        "Produced by `.venv/bin/python benchmarks/graph_coverage.py`.",
        "",
        f"Machine: {meta['processor']}, torch {meta['torch']}, {tp_name}, "
        f"{meta['threads']} thread, {meta['date']}.",
        "",
        f"| model | torchslim: pruned correctly? | MACs before → after | tracer | {tp_name}: "
        "pruned correctly? | MACs after |",
        "|---|---|---|---|---|---|",
    ]
    for name in ours:
        a, b = ours[name], theirs[name]
        lines.append(
            f"| {name} | {verdict(a)} | {a['macs_before']:,} → "
            f"{macs_cell(a['macs_before'], a['macs_after'])} | {a['tracer'] or '—'} "
            f"| {verdict(b)} | {macs_cell(b['macs_before'], b['macs_after'])} |"
        )
    lines += ["", *summary_lines(ours, theirs, tp_name)]
    return "\n".join(lines) + "\n"


def failure_kind(row: dict) -> str:
    if row["error"] and row["error"].startswith(TimeLimitExceeded.__name__):
        return f"did not finish within the time limit ({row['error_stage']})"
    if row["error"]:
        return f"{row['error'].split(':')[0]} during {row['error_stage']}"
    if not row["same_output_shape"]:
        return "a wrong output shape"
    if row["difference_measured"] and row["max_abs_difference"] > TOLERANCE:
        return "an output different from the masked model's"
    return "no MACs reduction"


def summary_lines(ours: dict, theirs: dict, tp_name: str) -> list[str]:
    total = len(ours)
    lines = [f"Pruned correctly: torchslim {sum(r['correct'] for r in ours.values())}/{total}, "
             f"{tp_name} {sum(r['correct'] for r in theirs.values())}/{total}."]
    for tool, rows in (("torchslim", ours), (tp_name, theirs)):
        kept = {n: r["macs_after"] / r["macs_before"] for n, r in rows.items() if r["correct"]}
        if kept:
            low, high = min(kept, key=kept.get), max(kept, key=kept.get)
            lines.append(f"{tool} keeps {100 * kept[low]:.0f} % ({low}) to {100 * kept[high]:.0f} "
                         f"% ({high}) of the MACs on the models it prunes correctly.")
        measured = {n: r for n, r in rows.items() if r["difference_measured"]}
        if measured:
            worst = max(measured, key=lambda n: measured[n]["max_abs_difference"])
            scale = [r["reference_output_max_abs"] for n, r in measured.items() if n != worst]
            lines.append(
                f"{tool}: largest masked-vs-pruned difference "
                f"{measured[worst]['max_abs_difference']:.1e} on {worst}, whose unpruned outputs "
                f"reach {measured[worst]['reference_output_max_abs']:.3g} in magnitude (at most "
                f"{max(scale, default=0):.3g} on the other models)."
            )
    effect = [r["masked_vs_unpruned"] for r in [*ours.values(), *theirs.values()]
              if r["masked_vs_unpruned"] is not None]
    if effect:
        lines.append(f"The check is not vacuous: the masked outputs differ from the unpruned "
                     f"model's by {min(effect):.2g} to {max(effect):.2g} (max abs).")
    unprunable = {n: r["unprunable"] for n, r in ours.items() if r["unprunable"]}
    if unprunable:
        lines.append("torchslim groups left unprunable other than the model input/output: "
                     + "; ".join(f"{n}: {len(u)} ({'; '.join(sorted(set(u.values())))})"
                                 for n, u in unprunable.items()) + ".")
    else:
        lines.append("torchslim left no channel group unprunable apart from the model input and "
                     "output groups.")
    untouched = {n: r["groups_nothing_removed"] for n, r in ours.items()
                 if r["groups_nothing_removed"]}
    if untouched:
        lines.append("torchslim groups with a single channel, so nothing removed (every group "
                     "keeps one): " + "; ".join(f"{n}: {', '.join(g)}"
                                               for n, g in untouched.items()) + ".")
    for tool, rows in (("torchslim", ours), (tp_name, theirs)):
        failures: dict[str, list[str]] = {}
        for name, row in rows.items():
            if not row["correct"]:
                failures.setdefault(failure_kind(row), []).append(name)
        if failures:
            lines.append(f"{tool} failures: " + "; ".join(
                f"{kind}: {', '.join(names)}" for kind, names in failures.items()) + ".")
    unmeasured = [n for n, r in theirs.items() if r["runs"] and not r["difference_measured"]]
    if unmeasured:
        lines.append(f"{tp_name}: no masked-model difference measured for "
                     f"{', '.join(unmeasured)} (removed slices not recovered exactly, or output "
                     "shape differs).")
    return [f"- {line}" for line in lines]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--time-limit", type=float, default=60.0,
                        help="seconds one tool may take on one model before it is stopped")
    args = parser.parse_args()
    torch.set_num_threads(1)
    rows = []
    started = time.perf_counter()
    for name, factory in ARCHITECTURES.items():
        x = torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(0))
        base = seeded(factory)
        with torch.no_grad():
            reference = base(x)
        macs_before = summarize(base, SHAPE).macs
        for run in (run_torchslim, run_torch_pruning):
            row = run(name, factory, x, reference, macs_before, args.time_limit)
            row["reference_output_max_abs"] = reference.abs().max().item()
            rows.append(row)
            status = "ok" if row["correct"] else f"FAILED {row['error'] or verdict(row)}"
            diff = (f"{row['max_abs_difference']:.1e}" if row["difference_measured"] else "—")
            print(f"{name:<16} {row['tool']:<20} {status:<60.60} MACs {macs_before:,} -> "
                  f"{row['macs_after']} diff {diff}", flush=True)
    meta = {**machine_meta(), "torch_pruning": TP_VERSION, "pruning_ratio": RATIO,
            "tolerance": TOLERANCE, "input_shape": [2, *SHAPE], "time_limit_s": args.time_limit,
            "total_seconds": round(time.perf_counter() - started, 1)}
    RESULTS.mkdir(parents=True, exist_ok=True)
    atomic_write_text(RESULTS / "graph_coverage.json",
                      json.dumps({"meta": meta, "rows": rows}, indent=2) + "\n")
    atomic_write_text(RESULTS / "graph_coverage.md", to_markdown(rows, meta))
    print(f"written: {RESULTS / 'graph_coverage.md'} ({meta['total_seconds']} s)")


if __name__ == "__main__":
    main()
