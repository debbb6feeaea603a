"""The run's device choice, `pytest --device auto|cpu|cuda`, and a header line naming the device: tests/devices.py."""

from devices import pytest_addoption, pytest_configure, pytest_report_header  # noqa: F401  (pytest hooks)
