"""How many replicas of a replaced version keep serving during a redeploy: a pure policy.

While the new version comes up, the old one serves beside it, less a batch that makes way at
once (a fifth of the target, at least one, as Ray's rolling update): the old replicas that
serve plus the new ones never ask for much more than the target's resources, and each new
replica that comes up lets one more old one go. Once the new version is up (or failed, or
gone) none of the old ones serves.
"""

from __future__ import annotations


def old_replicas_serving(target: int, new_running: int, new_is_updating: bool) -> int:
    """How many old replicas may keep serving, with the new version at ``target`` replicas of
    which ``new_running`` are up; ``new_is_updating`` is false once it is up, failed or gone."""
    if not new_is_updating:
        return 0
    return max(0, target - new_running - max(1, target // 5))
