#!/usr/bin/env python3
"""Run a single-node Apache Kafka broker (KRaft mode) on loopback, with no Docker.

Usage::

    python scripts/local_kafka.py start  [--state-dir DIR] [--port PORT]
    python scripts/local_kafka.py stop   [--state-dir DIR]
    python scripts/local_kafka.py status [--state-dir DIR]
    python scripts/local_kafka.py env    [--state-dir DIR]
    python scripts/local_kafka.py fetch

A command-line shim: the launcher is :mod:`reactive_services.testing.local_kafka` (see its
docstring; ``python -m reactive_services.testing.local_kafka`` is the same). Install the
package first (``pip install -e .``).
"""

import sys

from reactive_services.testing.local_kafka import main

if __name__ == "__main__":
    sys.exit(main())
