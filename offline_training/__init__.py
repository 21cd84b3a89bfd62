"""Offline command-line tools (each a thin ``main(argv=None)``); see DESIGN.md."""
