"""Option values as they reach LiteZoo from bundle configs and command lines.

:func:`choose` picks one of several named config components by an option's value (a bundle's
``resample_back: labels | probabilities`` picks its postprocessing), with an error that lists the choices.

``python -m monai.bundle run ... --resume true`` passes the *string* ``"true"`` (python-fire parses only Python
literals, so ``True`` is a bool but ``true`` and ``false`` are strings, and ``"false"`` is truthy). Every boolean
option of a LiteZoo component goes through :func:`as_bool`.
"""

from __future__ import annotations

from typing import Any

__all__ = ["as_bool", "choose"]

_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off", ""}


def as_bool(value: Any, name: str) -> bool:
    """``value`` as a bool: a bool, 0/1, or one of ``true/false, yes/no, on/off, 1/0`` in any case.

    Args:
        value: the option's value.
        name: the option's name, for the error message.

    Raises:
        ValueError: any other value (the message names the option and the accepted spellings).

    Example::

        >>> as_bool("false", "resume"), as_bool(True, "resume")
        (False, True)
    """
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise ValueError(f"Option {name} must be true or false (or yes/no, on/off, 1/0), got {value!r}.")


def choose(name: str, value: Any, choices: dict[str, Any]) -> Any:
    """The entry of ``choices`` named by the option ``name``'s ``value``.

    Args:
        name: the option's name, for the error message.
        value: the option's value (a key of ``choices``).
        choices: the alternatives by name.

    Raises:
        ValueError: ``value`` names none of them (the message lists them).

    Example (a bundle config)::

        "postprocessing": {"_target_": "litezoo.runtime.options.choose", "name": "resample_back",
                           "value": "@resample_back", "choices": {"labels": "@postprocessing_labels", ...}}
    """
    if value not in choices:
        raise ValueError(f"Option {name} must be one of {sorted(choices)}, got {value!r}.")
    return choices[value]
