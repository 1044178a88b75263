"""Mission key grants end to end: the client that issues and revokes them, the runner that uses them.

* :mod:`mana_ai.privacy.reseal`: the re-sealed record copies that make granted data readable (W2, W3);
* :mod:`mana_ai.privacy.grant_client`: ``grants create / revoke / refresh``, run where the master key is;
* :mod:`mana_ai.privacy.grant_context`: the unwrapped grant of one mission's planning;
* :mod:`mana_ai.privacy.steps`: the runner's text step and resolver input step;
* :mod:`mana_ai.privacy.audit`: the decrypt audit (best-effort writes, per-user reads);
* :mod:`mana_ai.privacy.keyfiles`: master-key files and the runner's key pair on disk.

The design is described in ``docs/privacy.md``.
"""

from __future__ import annotations
