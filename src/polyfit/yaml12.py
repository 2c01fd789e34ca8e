"""YAML as DVC reads it, and validation errors as one line: shared by params.yaml and gate.yaml."""

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
    first = error.errors()[0]
    key = ".".join(str(part) if str(part).isprintable() else repr(part) for part in first["loc"])
    kind, value = first["type"], first.get("input")
    if kind == "missing":
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
    if more := len(error.errors()) - 1:
        message += f" (and {more} more problem{'s' * (more > 1)})"
    return f"{key}: {message}" if key else message


def _reads_as_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True
