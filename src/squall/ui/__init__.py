"""The web dashboard at `/ui`: static assets plus two small JSON views (see docs/ui.md)."""

from squall.ui.routes import ui_routes

__all__ = ["ui_routes"]
