"""Test infrastructure for applications on ottla, needing no test framework:

- :func:`make_certificates` (``ottla.testing.certificates``): a throw-away
  certificate authority, server and client certificates for TLS tests;
- ``ottla.testing.checker``: checks a replicated log's guarantees from what
  clients saw and what every replica holds (see ``ottla.Cluster`` for the
  cluster itself).
"""

from ottla.testing.certificates import Certificates, make_certificates

__all__ = ["Certificates", "make_certificates"]
