"""Consumer results as Apache Arrow record batches and pandas DataFrames.

The records are laid out in Arrow's memory format by the Rust engine while
it walks the log (no Python object per record) and handed to pyarrow through
the Arrow PyCapsule interface, without copying. pyarrow (and pandas for
``to_pandas``) are optional: ``pip install 'ottla[arrow]'``.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXTRA_HINT = (
    "ottla's Arrow and pandas readers need pyarrow (and pandas for to_pandas): "
    "pip install 'ottla[arrow]'"
)


def pyarrow() -> Any:
    """The ``pyarrow`` module, or an ImportError that names the extra."""
    try:
        # importlib: pyarrow ships no type information, and may be absent.
        return importlib.import_module("pyarrow")
    except ImportError as e:
        raise ImportError(_EXTRA_HINT) from e


def require(pandas: bool = False) -> None:
    """Raise the ImportError *before* records are taken from the log: a
    record handed to a conversion that then fails would be lost to the
    caller while its position moved past it."""
    pyarrow()
    if pandas:
        try:
            importlib.import_module("pandas")
        except ImportError as e:
            raise ImportError(_EXTRA_HINT) from e


def record_batch(raw: Any) -> Any:
    """``pyarrow.RecordBatch`` over an ``ottla._core.ArrowBatch`` (no copy)."""
    pa = pyarrow()
    schema, array = raw.__arrow_c_array__()
    return pa.RecordBatch._import_from_c_capsule(schema, array)


def table(raws: list[Any]) -> Any:
    """``pyarrow.Table`` over ``ottla._core.ArrowBatch``es (no copy)."""
    pa = pyarrow()
    batches = [record_batch(r) for r in raws]
    return pa.Table.from_batches(batches, schema=batches[0].schema)


def to_pandas(tbl: Any, **kwargs: Any) -> Any:
    """``tbl.to_pandas(**kwargs)``, with the extra named if pandas is missing."""
    try:
        importlib.import_module("pandas")
    except ImportError as e:
        raise ImportError(_EXTRA_HINT) from e
    return tbl.to_pandas(**kwargs)
