"""Reading the processors' TOML files: signal, alert and anomaly rules, token prices.

Each file ships in this package as the default and may be replaced by a user's copy. The
four loaders read and decode them here, so a missing, unreadable or malformed file is
reported the same way everywhere: one line naming the file, raised as the caller's own
error type (chained `from` the cause) so the processor stops at start-up.
"""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple

from sigflow.exceptions import SigflowError


class RulesText(NamedTuple):
    """A rules file's text and the name errors give it."""

    text: str
    source: str


def packaged_rules(name: str) -> RulesText:
    """The text of the default file `name` shipped in this package."""
    text = resources.files("processors").joinpath(name).read_text(encoding="utf-8")
    return RulesText(text, f"processors/{name}")


def read_rules(
    path: Path | None, *, default: str, error: type[SigflowError], what: str
) -> RulesText:
    """The file at `path`, or the packaged `default` when None; `what` names the kind of
    file in the `error` raised when `path` cannot be read."""
    if path is None:
        return packaged_rules(default)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise error(f"{path}: cannot read the {what} file: {exc}") from exc
    return RulesText(text, str(path))


def parse_toml(text: str, *, source: str, error: type[SigflowError]) -> dict[str, Any]:
    """The TOML document in `text`; a syntax error becomes `error` naming `source`."""
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise error(f"{source}: not valid TOML: {exc}") from exc
