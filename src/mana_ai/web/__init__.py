"""The workbench's web pages (``/workbench``): see :mod:`mana_ai.web.router`."""

from __future__ import annotations
