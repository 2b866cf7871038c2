"""Helpers shared by the test suites: free ports, real service processes, orphan checks."""
