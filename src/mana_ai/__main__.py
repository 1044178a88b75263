from __future__ import annotations

from mana_ai.cli import main

main()
