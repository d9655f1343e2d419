"""Checks, one module per kind of check, each defining ``KIND``: ``statistics(shard, config,
method)`` per shard and ``decide(request) -> Outcome`` from the merged statistics (see
:mod:`.kind`); :mod:`.registry` is the table of kinds. Shared pieces: :mod:`.outcome` (what an
item gives back), :mod:`.request` (what it is asked), :mod:`.aggregation` (aggregates and their
intervals), :mod:`.samples` (the worst samples as rows and tables), :mod:`.scores` (the outcome
of a kind whose thresholds are aggregates of per-sample scores)."""
