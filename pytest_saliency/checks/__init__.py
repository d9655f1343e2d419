"""Checks, one module per kind of check; each has ``statistics(shard, check, method)`` (per
shard) and ``decide(request) -> Outcome`` (from the merged statistics): see :mod:`.base`."""
