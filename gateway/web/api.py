"""The notebook servers JSON API, on the Jupyter web app's routes."""

from __future__ import annotations

from aiohttp import web

routes = web.RouteTableDef()
