"""The ``broker`` fixture (memory, then Kafka) the contract tests use lives in tests/conftest.py."""
