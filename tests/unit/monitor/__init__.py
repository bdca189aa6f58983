"""Tests of workbench.monitor (a package, so that its module names do not clash with tests/integration)."""
