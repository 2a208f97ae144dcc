"""Test infrastructure for applications on ottla: ``ottla.testing.checker``
checks a replicated log's guarantees from what clients saw and what every
replica holds (see ``ottla.Cluster`` for the cluster itself)."""
