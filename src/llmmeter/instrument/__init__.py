"""Instrumentation: wrap a call, start a Measurement, proxy the result, finish exactly once."""
