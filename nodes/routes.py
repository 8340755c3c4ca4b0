"""The pack's HTTP route: the family table for the front end's layer map.

``GET /gag/families`` (and ``/api/gag/families``) returns ``families.front_end_table()``, so
the layer map draws from the same data the hooks read; nothing is copied into web/.
"""

from __future__ import annotations

import logging

from .adapters import comfy_compat, front_end_table

FAMILIES_ROUTE = "/gag/families"
_registered = False


def register_routes() -> bool:
    """Add the route to ComfyUI's server; False (and nothing done) without a running server,
    as when a script or a test imports the pack."""
    global _registered
    if _registered:
        return True
    instance = comfy_compat.prompt_server()
    if instance is None:
        return False
    from aiohttp import web  # ComfyUI's server runs on it

    @instance.routes.get(FAMILIES_ROUTE)
    async def families(request):
        return web.json_response(front_end_table())

    _registered = True
    logging.getLogger("comfyui_gag").debug("GAG: serving %s", FAMILIES_ROUTE)
    return True
