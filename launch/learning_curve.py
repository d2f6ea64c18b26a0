"""Learning curves: a validation metric against training steps, one line per run, as a PNG.

  python launch/learning_curve.py --out=docs/figures/learning_curve_ml1m.png \
      --run=runs/ablations_ml1m/paper_seed-0:paper --run=runs/tuned_ml1m/sine_seed-0:tuned
  python launch/learning_curve.py --out=curve.png --metric=valid/NDCG@10 --run=runs/ml1m

Reads each RUN_DIR/metrics.jsonl (after a resume a step can appear twice: the last line
wins), plots --metric (default valid/HR@10, in percent) against the step, marks each run's
best point, and prints the points as a Markdown table. A run directory may end in :LABEL
(default: the directory's name). Exit code 2, with one line on stderr, for a run without
metrics.jsonl or without the metric.
"""

import json
import os
import sys

from absl import flags

from sine_jax import cli
from sine_jax.errors import SineError, import_optional


class CurveError(SineError):
    """A bad argument or run directory: the message names it."""


def read_curve(workdir: str, metric: str) -> list[tuple[int, float]]:
    """[(step, value)] of `metric` in WORKDIR/metrics.jsonl, ascending steps, the last line of
    a repeated step kept. Raises CurveError naming the file (and line) when it cannot."""
    path = os.path.join(workdir, "metrics.jsonl")
    if not os.path.isfile(path):
        raise CurveError(f"{path}: no such file (is {workdir} a training run's workdir?)")
    points = {}
    with open(path) as f:
        for number, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
                if not isinstance(record, dict):
                    raise TypeError(f"a JSON {type(record).__name__}, not an object")
                if metric in record:
                    points[int(record["step"])] = float(record[metric])
            except (ValueError, KeyError, TypeError) as e:
                raise CurveError(f"{path}:{number}: not a metrics line ({e})") from e
    if not points:
        raise CurveError(f"{path}: no {metric!r} values (metrics are named like valid/HR@10)")
    return sorted(points.items())


def parse_run(text: str) -> tuple[str, str]:
    """'DIR:LABEL' -> (DIR, LABEL); 'DIR' -> (DIR, its base name)."""
    workdir, _, label = text.partition(":")
    return workdir, label or os.path.basename(os.path.normpath(workdir))


def plot(curves: dict[str, list[tuple[int, float]]], metric: str, path: str) -> None:
    """Writes PATH (PNG): one line per curve in percent, its best point marked."""
    import_optional("matplotlib", "analysis").use("Agg")
    from matplotlib import pyplot as plt

    figure, ax = plt.subplots(figsize=(6.4, 4.0))
    for label, points in curves.items():
        steps, values = zip(*points)
        percent = [100 * v for v in values]
        (line,) = ax.plot(steps, percent, marker=".", label=label)
        best = max(range(len(percent)), key=percent.__getitem__)
        ax.plot(steps[best], percent[best], marker="*", markersize=12, color=line.get_color())
    ax.set_xlabel("training step")
    ax.set_ylabel(f"{metric} (%)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def markdown(curves: dict[str, list[tuple[int, float]]], metric: str) -> str:
    """The curves as a table: one row per step, one column per run (percent)."""
    steps = sorted({step for points in curves.values() for step, _ in points})
    lookup = {label: dict(points) for label, points in curves.items()}
    lines = ["| step | " + " | ".join(f"{label} {metric}" for label in curves) + " |",
             "|---" * (len(curves) + 1) + "|"]
    for step in steps:
        cells = [f"{100 * lookup[label][step]:.2f}" if step in lookup[label] else ""
                 for label in curves]
        lines.append(f"| {step} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def define_flags(flag_values: flags.FlagValues) -> None:
    flags.DEFINE_multi_string("run", None, "DIR[:LABEL]: a training run's workdir (repeatable)",
                              flag_values=flag_values)
    flags.DEFINE_string("metric", "valid/HR@10", "the metric plotted", flag_values=flag_values)
    flags.DEFINE_string("out", None, "the PNG to write", flag_values=flag_values)
    flags.mark_flags_as_required(["run", "out"], flag_values=flag_values)


@cli.tool
def main(argv: list[str] | None = None) -> int:
    args = cli.parse_flags(define_flags, argv, __doc__)
    runs = [parse_run(text) for text in args.run]
    labels = [label for _, label in runs]
    if len(set(labels)) < len(labels):
        raise CurveError("two runs share a label: give DIR:LABEL")
    curves = {label: read_curve(workdir, args.metric) for workdir, label in runs}
    os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
    plot(curves, args.metric, args.out)
    print(markdown(curves, args.metric) + f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
