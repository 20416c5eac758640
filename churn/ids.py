"""Customer ids as the engine keeps them: text, whatever the source gave.

Ingested data sets have text ids (IBM Telco's `7590-VHVEG`), the simulator integer ones.
Everything past the feature store (the service's answers, the ledger, draws, lists) holds
the id's text, so an integer id means the same customer as its decimal text (123 == "123").
"""

from __future__ import annotations

from collections.abc import Iterable
import re
from numbers import Integral

import numpy as np

# A longer id is not one: it would not fit the ledger's columns (`sa.String(128)`).
MAX_ID_LENGTH = 128
# C0 and C1 control characters and DEL, as a regular expression's character range (Python, JSON Schema and
# pydantic's Rust engine read it alike): an id that holds them cannot be shown or written to a CSV safely.
CONTROL_CHARACTERS = r"\x00-\x1f\x7f-\x9f"
_CONTROL = re.compile(f"[{CONTROL_CHARACTERS}]")


def id_text(customer: object) -> str:
    """The text of one customer id: an integer's decimal form, a string as it is.

    Integral floats (an id column read with a missing value) are integers; any other
    float is refused, as its text would not name the customer the source meant.
    """
    if isinstance(customer, str):
        return customer
    if isinstance(customer, Integral) and not isinstance(customer, bool):
        return str(int(customer))
    if isinstance(customer, float | np.floating) and float(customer).is_integer():
        return str(int(customer))
    raise ValueError(f"customer id {customer!r} is neither text nor an integer")


def ids_text(customers: Iterable[object]) -> np.ndarray:
    """The texts of many customer ids, as a NumPy object array (see `id_text`)."""
    values = customers.tolist() if isinstance(customers, np.ndarray) else list(customers)
    return np.array([id_text(c) for c in values], dtype=object)


def id_problem(text: str) -> str | None:
    """Why `text` is not a valid customer id (empty, too long, a control character), or None."""
    if not text:
        return "is empty"
    if len(text) > MAX_ID_LENGTH:
        return f"has {len(text)} characters, more than {MAX_ID_LENGTH}"
    if _CONTROL.search(text):
        return "holds a control character"
    return None
