"""`polyfit status`: whether `dvc repro` changed the committed results (dvc.lock, metrics/), and
why, in a line or two. `make run` ends with it, so a first run on a machine other than the one
that made the committed results explains the files `git status` then shows as modified.
"""

import json
import subprocess

import yaml

from polyfit import paths
from polyfit.cpu import this_cpu
from polyfit.tools.gate import compare, resolve, summary

RESULTS = [str(paths.PIPELINE.with_suffix(".lock")), str(paths.TRAIN_METRICS.parent)]


def changed(*pathspec: str) -> list[str]:
    """Tracked files that differ from HEAD, under `pathspec`."""
    done = subprocess.run(
        ["git", "diff", "--name-only", "HEAD", "--", *pathspec], capture_output=True, text=True
    )
    return done.stdout.split()


def main(args) -> None:
    commit = resolve("HEAD")
    if not changed(*RESULTS):
        print("dvc.lock and metrics/ are as committed: this machine reproduced the same bytes.")
        return
    inputs = changed(".", *(f":(exclude){path}" for path in RESULTS))
    if not inputs and not changed(RESULTS[1]) and _outputs("HEAD") == _outputs(None):
        print(
            "dvc.lock records code or params committed without `dvc repro`; the outputs are the "
            "committed bytes. Commit dvc.lock."
        )
        return
    verdict = summary(compare(commit, "HEAD"))
    if inputs:
        shown = ", ".join(inputs[:3]) + (f" and {len(inputs) - 3} more" if len(inputs) > 3 else "")
        print(
            f"dvc.lock and metrics/ follow your changes to {shown}. `polyfit gate`: {verdict}\n"
            "Commit them with those changes."
        )
        return
    print(
        f"dvc.lock and metrics/ differ from the commit, though no code or params did: "
        f"{_final_loss()} on this {this_cpu()}. CPUs round float32's last bits differently and "
        f"training amplifies that. `polyfit gate`: {verdict}\n"
        "Nothing to commit: leave them as they are (docs/determinism.md)."
    )


def _outputs(revision: str | None) -> dict[str, str]:
    """{output path: md5} as dvc.lock records them at `revision`, or in the workspace."""
    lock = paths.PIPELINE.with_suffix(".lock")
    if revision is None:
        text = lock.read_text()
    else:
        shown = ["git", "show", f"{revision}:{lock}"]
        text = subprocess.run(shown, capture_output=True, text=True).stdout
    stages = (yaml.safe_load(text) or {}).get("stages", {})
    return {out["path"]: out["md5"] for stage in stages.values() for out in stage.get("outs", [])}


def _final_loss() -> str:
    """'final_loss 8.867 -> 8.935', committed -> reproduced."""
    path = str(paths.TRAIN_METRICS)
    shown = subprocess.run(["git", "show", f"HEAD:{path}"], capture_output=True, text=True)
    try:
        old = json.loads(shown.stdout)["final_loss"]
        new = json.loads(paths.TRAIN_METRICS.read_text())["final_loss"]
    except (ValueError, KeyError, OSError):
        return "other results"
    return f"final_loss {old:.6g} -> {new:.6g}"
