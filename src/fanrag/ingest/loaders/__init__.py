"""Loaders: one source file -> Documents. ``load`` sniffs the format (content first, extension second)
and dispatches through the ``LOADERS`` registry (``factory.py``); ``units`` and ``Part`` let large PDFs
and JSONL collections fan out across workers.

Every failure is a LoadError subclass whose ``source`` is the path and whose ``reason`` is one line.
"""

from .base import Documents, Loader, Part
from .factory import LOADERS, get_loader, load, units
from .sniff import SUPPORTED_EXTENSIONS, sniff

__all__ = ["LOADERS", "SUPPORTED_EXTENSIONS", "Documents", "Loader", "Part", "get_loader", "load", "sniff",
           "units"]
