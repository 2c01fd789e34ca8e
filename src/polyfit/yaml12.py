"""YAML as DVC reads it, and validation errors as one line: shared by params.yaml and gate.yaml."""

import difflib
import re

import yaml
from pydantic import ValidationError

from polyfit.errors import UsageError


class _Yaml12Loader(yaml.SafeLoader):
    """SafeLoader that reads `1e-3` as a float, as YAML 1.2 and DVC do, and refuses repeated keys.

    PyYAML follows YAML 1.1, where `1e-3` is a string; DVC reads params.yaml as YAML 1.2 and
    writes floats that way (`dvc exp run -S train.lr=1e-6` stores `lr: 1e-06`), so we must agree.
    A key given twice would otherwise silently take the last value.
    """

    def construct_mapping(self, node, deep=False):
        seen = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            if not _hashable(key):
                continue  # SafeLoader's own check reports it
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"key {key!r} repeated", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _hashable(key: object) -> bool:
    try:
        hash(key)
    except TypeError:
        return False
    return True


_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?[0-9][0-9_]*(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def parse_yaml(text: str, source: str) -> object:
    """Parse YAML (1.2 floats) with a one-line UsageError naming the line of a syntax error."""
    try:
        return yaml.load(text, Loader=_Yaml12Loader)  # a SafeLoader: builds no objects
    except yaml.YAMLError as error:
        where = getattr(error, "problem_mark", None)
        line = f" at line {where.line + 1}" if where else ""
        problem = getattr(error, "problem", None) or "invalid YAML"
        raise UsageError(f"{source}: malformed YAML{line}: {problem}") from None


def describe(error: ValidationError) -> str:
    """One line naming the first bad key and what is wrong with it."""
    errors = error.errors()
    typos = _misspelt_keys(errors)
    explained = [missing for _, missing in typos]  # by a typo: not another problem
    errors = [e for e in errors if not any(e is missing for missing in explained)]
    first = typos[0][0] if typos else errors[0]  # the typo first: it is why a key is missing
    key = ".".join(str(part) if str(part).isprintable() else repr(part) for part in first["loc"])
    kind, value = first["type"], first.get("input")
    if typos:
        message = f"unknown key; did you mean {typos[0][1]['loc'][-1]!r}?"
    elif kind == "missing":
        message = "missing key"
    elif kind == "extra_forbidden":
        message = "unknown key"
    elif isinstance(value, str) and _reads_as_number(value):
        message = f"got the string {value!r}; write the number without quotes: {float(value)!r}"
    else:
        message = first["msg"].removeprefix("Value error, ")
        if kind not in ("value_error",):
            shown = repr(value)
            message += f" (got {shown if len(shown) <= 60 else shown[:57] + '...'})"
    if more := len(errors) - 1:
        message += f" (and {more} more problem{'s' * (more > 1)})"
    return f"{key}: {message}" if key else message


def _misspelt_keys(errors: list) -> list[tuple[dict, dict]]:
    """(unknown key, missing key) error pairs, each one typo: an unknown key that resembles a
    missing key beside it (`trian:` for `train:`)."""
    pairs = []
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    for missing in (e for e in errors if e["type"] == "missing"):
        *parent, name = missing["loc"]
        beside = {str(e["loc"][-1]): e for e in unknown if list(e["loc"][:-1]) == parent}
        if close := difflib.get_close_matches(str(name), beside, n=1):
            pairs.append((beside[close[0]], missing))
            unknown.remove(beside[close[0]])
    return pairs


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
