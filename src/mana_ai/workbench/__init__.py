"""The workbench: review, approve and run the steps the runner planned, track goals (issue 8).

* :mod:`~mana_ai.workbench.proposals` (pure): which plan steps are proposals, how a decision changes a
  mission's iterations (SPEC §6.3, §6.8, §11).
* :mod:`~mana_ai.workbench.shapes` (pure): the web app's record shapes, sync apps/tables and encrypted fields.
* :mod:`~mana_ai.workbench.goals` (pure): the goal tracker of SPEC §23.
* :mod:`~mana_ai.workbench.context` and :mod:`~mana_ai.workbench.executors`: running an approved step on the
  user's data through the sync log; :mod:`~mana_ai.workbench.tracker` feeds its events to the goals.
* :mod:`~mana_ai.workbench.decide`: approve / reject / expire under the mission's record lock, idempotently.
* :mod:`~mana_ai.workbench.store`: read models (inbox pages, timeline, token usage, goals);
  :mod:`~mana_ai.workbench.writes`: the user's own edits (agents, missions).

The pages live in :mod:`mana_ai.web`, the commands in :mod:`mana_ai.cli.workbench`.
"""

from __future__ import annotations
