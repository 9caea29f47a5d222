"""Command-line argument lists as Dynamo's containers carry them: flags, their values, and edits.

`--a=1` and `--a 1` are the same flag; a token like `-1` is a value, not a flag.
"""

from __future__ import annotations

import re

_NUMBER = re.compile(r"^-\d")


def is_flag(token: str) -> bool:
    return token.startswith("-") and not _NUMBER.match(token)


def groups(args: list[str]) -> list[tuple[str | None, list[str]]]:
    """[(flag name or None for positionals, tokens)]; `--a=1` and `--a 1` both give flag `--a`."""
    out: list[tuple[str | None, list[str]]] = []
    for token in args:
        if is_flag(token):
            out.append((token.split("=", 1)[0], [token]))
        elif out:
            out[-1][1].append(token)
        else:
            out.append((None, [token]))
    return out


def set_flag_values(args: list[str], values: dict[str, str]) -> list[str]:
    """Set `--flag=value` for each entry: in place of either spelling already present, else appended."""
    out: list[str] = []
    done: set[str] = set()
    for flag, toks in groups(args):
        if flag in values:
            if flag not in done:
                out.append(f"{flag}={values[flag]}")
                done.add(flag)
        else:
            out += toks
    return out + [f"{flag}={value}" for flag, value in values.items() if flag not in done]
