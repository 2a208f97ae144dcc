"""One name for both forms: ``isinstance(p, ottla.Producer)`` is true of a
producer of a directory and of a cluster alike.

The directory classes subclass the Rust engine's, so the cluster classes
cannot subclass them (there would be an engine object under each); this
metaclass makes ``isinstance`` accept the cluster class registered for a
name instead. Only ``isinstance``/``issubclass`` checks go through it.
"""

from __future__ import annotations


class Door(type):
    """Metaclass of ``ottla.Producer``, ``ottla.Consumer`` and
    ``ottla.aio.Producer``: their cluster twins (``_remote_twin``, a
    dotted path imported on first check) count as instances."""

    def __instancecheck__(cls, obj: object) -> bool:
        if type.__instancecheck__(cls, obj):
            return True
        twin = getattr(type(obj), "_ottla_twin_of", None)
        return twin is not None and twin == f"{cls.__module__}.{cls.__qualname__}"

    def __subclasscheck__(cls, sub: type) -> bool:
        if type.__subclasscheck__(cls, sub):
            return True
        twin = getattr(sub, "_ottla_twin_of", None)
        return twin is not None and twin == f"{cls.__module__}.{cls.__qualname__}"
