"""Input resolvers (SPEC §7): a registry of ``module → resolver`` and one module per resolver family.

* :mod:`mana_ai.resolvers.registry`: :class:`~mana_ai.resolvers.registry.ResolverRegistry`, the context,
  :func:`~mana_ai.resolvers.registry.default_registry`;
* :mod:`mana_ai.resolvers.encrypted`: notes, tasks/todo, calendar, journal, kontext, profile (need a grant);
* :mod:`mana_ai.resolvers.goals`: plaintext goals;
* :mod:`mana_ai.resolvers.formats`: the prompt text of each family.
"""

from __future__ import annotations
