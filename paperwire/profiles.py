"""Profile files: load and validate ``profiles/*.yaml``, reporting problems as ``FILE:LINE: message``.

A file is loaded whole or not at all; one bad file never stops the good ones from loading.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

from paperwire.models import Profile


@dataclass
class Problem:
    path: Path
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}"


@dataclass
class Loaded:
    profiles: list[Profile] = field(default_factory=list)
    sources: dict[str, Path] = field(default_factory=dict)  # user id -> file
    problems: list[Problem] = field(default_factory=list)


def profile_files(paths: list[Path]) -> list[Path]:
    files: list[Path] = []
    for p in paths:
        if p.is_dir():
            files.extend(sorted([*p.glob("*.yaml"), *p.glob("*.yml")]))
        else:
            files.append(p)
    return files


def _line_of(node: yaml.Node | None, loc: tuple[Any, ...]) -> int:
    """Follow a pydantic error location through the YAML node tree to a 1-based line."""
    line = node.start_mark.line + 1 if node is not None else 1
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if key.value == part:
                    line = key.start_mark.line + 1
                    node = value
                    break
            else:
                return line
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            return line
    return line


def _message(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    if err["type"] == "extra_forbidden":
        return f"unknown key {err['loc'][-1]!r}"
    if err["type"] == "missing":
        return f"missing required key {loc!r}"
    msg = err["msg"].removeprefix("Value error, ")
    return f"{loc}: {msg}" if loc else msg


def load_file(path: Path) -> tuple[Profile | None, list[Problem]]:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        return None, [Problem(path, 1, f"cannot read: {exc}")]
    try:
        node = yaml.compose(text)
        data = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        return None, [Problem(path, mark.line + 1 if mark else 1, f"YAML syntax error: {exc.problem}")]
    except yaml.YAMLError as exc:
        return None, [Problem(path, 1, f"YAML error: {exc}")]
    if not isinstance(data, dict):
        return None, [Problem(path, 1, "a profile file must be a mapping with id, email and topics")]
    try:
        return Profile.model_validate(data), []
    except ValidationError as exc:
        return None, [Problem(path, _line_of(node, err["loc"]), _message(err)) for err in exc.errors()]


def load(paths: list[Path]) -> Loaded:
    """Load every profile file under ``paths``; duplicates across files are problems of the later file."""
    out = Loaded()
    for path in profile_files(paths):
        profile, problems = load_file(path)
        if problems:
            out.problems.extend(problems)
            continue
        assert profile is not None
        if profile.id in out.sources:
            node = yaml.compose(path.read_text(encoding="utf-8"))
            out.problems.append(
                Problem(
                    path,
                    _line_of(node, ("id",)),
                    f"duplicate user id {profile.id!r} (also in {out.sources[profile.id]})",
                )
            )
            continue
        out.sources[profile.id] = path
        out.profiles.append(profile)
    return out
