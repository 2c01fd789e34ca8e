"""Checkpoints of the train stage: all a killed training needs to carry on to the same bytes.

Written atomically every train.checkpoint_every steps to checkpoints/ at the project root, a
folder git and DVC ignore: DVC deletes a stage's outputs before running it, and runs queued
experiments in temporary copies of the repo, so a checkpoint lives outside both. Each is named by
the fingerprint of what the train stage depends on, as dvc.yaml declares it (its params and the
md5 of each dep), and used only for that same fingerprint. docs/checkpoints.md has the details.
"""

import hashlib
import json
import os
from pathlib import Path
from typing import NamedTuple

import yaml

from polyfit import files, paths
from polyfit.errors import UsageError
from polyfit.paths import project_root
from polyfit.yaml12 import parse_yaml


class Fingerprint(NamedTuple):
    params: dict[str, str]  # each param key dvc.yaml lists for the stage -> its value, as JSON
    deps: dict[str, str]  # each dep dvc.yaml lists for the stage -> the md5 of its content

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(self, sort_keys=True).encode()).hexdigest()[:16]

    def differences(self, other: "Fingerprint") -> list[str]:
        """What changed from `other` to this one, in words: 'train.lr 0.001 -> 0.002'."""
        changed = [
            f"{key} {other.params.get(key, '(none)')} -> {self.params.get(key, '(none)')}"
            for key in sorted(self.params.keys() | other.params.keys())
            if self.params.get(key) != other.params.get(key)
        ]
        return changed + [
            f"{path} changed"
            for path in sorted(self.deps.keys() | other.deps.keys())
            if self.deps.get(path) != other.deps.get(path)
        ]


def fingerprint(stage: str = "train") -> Fingerprint:
    """What `stage` depends on, read from dvc.yaml, params.yaml and the deps in this folder."""
    try:
        declared = yaml.safe_load(paths.PIPELINE.read_text())["stages"][stage]
    except (OSError, KeyError, TypeError, yaml.YAMLError):
        raise UsageError(
            f"train.checkpoint_every: checkpoints are named by what {paths.PIPELINE} declares "
            f"for its stage '{stage}', and it declares none here: set it null"
        ) from None
    values = parse_yaml(paths.PARAMS.read_text(), str(paths.PARAMS))  # as DVC reads it
    params = {key: json.dumps(_lookup(values, key), sort_keys=True) for key in _keys(declared)}
    return Fingerprint(params, {str(dep): _md5(Path(dep)) for dep in declared.get("deps", [])})


def _keys(declared: dict) -> list[str]:
    """The params.yaml keys a stage lists: `- train.lr`, or `- params.yaml: [train.lr]`."""
    keys = []
    for entry in declared.get("params", []):
        if isinstance(entry, str):
            keys.append(entry)
        else:  # {file: [keys]}, or {file: None} for all of it
            keys += [key for listed in entry.values() for key in listed or [""]]
    return keys


def _lookup(values: dict, key: str):
    """The value at a dotted key ("" for the whole file)."""
    for part in filter(None, key.split(".")):
        if not isinstance(values, dict) or part not in values:
            raise UsageError(f"{paths.PIPELINE} lists the param {key}, which {paths.PARAMS} lacks")
        values = values[part]
    return values


def _md5(path: Path) -> str:
    """A file's md5, or one md5 over a folder's files (their paths and contents)."""
    if not path.is_dir():
        return files.digests(files.read_bytes(path)).md5
    digest = hashlib.md5()
    for item in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(f"{item.relative_to(path)}\0{_md5(item)}\0".encode())
    return digest.hexdigest()


def folder() -> Path:
    """checkpoints/ at the project root, or POLYFIT_CHECKPOINTS: a folder several clones share
    (Dask workers on several machines), so a configuration resumes on whichever runs it again."""
    return Path(os.environ.get("POLYFIT_CHECKPOINTS") or project_root() / paths.CHECKPOINTS)


def path_for(fingerprint: Fingerprint) -> Path:
    return folder() / f"train-{fingerprint.digest()}.pt"


def save(fingerprint: Fingerprint, state: dict) -> None:
    """Write the state (tensors, and dicts, lists, strings and numbers of them) atomically."""
    content = files.to_bytes({"fingerprint": fingerprint._asdict(), **state})
    files.write_atomic(path_for(fingerprint), content)


def find(fingerprint: Fingerprint | None) -> tuple[dict | None, str]:
    """(the checkpoint made for this fingerprint, or None; one line that says which was used,
    or why none was). No fingerprint: checkpoints are off."""
    if fingerprint is None:
        return None, ""
    path = path_for(fingerprint)
    if path.exists():
        try:
            state = files.load_saved(path, files.read_bytes(path))
        except UsageError as error:
            return None, f"not resuming: {error}; training from step 0"
        return state, f"resuming from step {state['step']} ({path})"
    others = sorted(folder().glob("train-*.pt"), key=lambda other: other.stat().st_mtime)
    if not others:
        return None, ""
    try:
        newest = files.load_saved(others[-1], files.read_bytes(others[-1]))
        changes = fingerprint.differences(Fingerprint(**newest["fingerprint"]))
        why = f"it was made for other inputs: {'; '.join(changes)}"
    except (UsageError, KeyError, TypeError) as error:
        why = f"it cannot be read ({error})"
    return None, f"not resuming from {others[-1]}: {why}; training from step 0"


def remove(fingerprint: Fingerprint | None) -> None:
    """Delete this fingerprint's checkpoint, once training has finished."""
    if fingerprint is not None:
        path_for(fingerprint).unlink(missing_ok=True)
