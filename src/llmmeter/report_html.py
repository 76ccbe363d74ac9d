"""Moved to :mod:`llmmeter.report.html`; this name stays importable for existing code."""

from llmmeter.report.html import render_html

__all__ = ["render_html"]
