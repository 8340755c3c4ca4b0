"""GAG node pack for ComfyUI: Geometry-Aware Attention Guidance.

ComfyUI imports this folder as a package and calls ``comfy_entrypoint``; ``WEB_DIRECTORY`` serves
``web/`` (help pages and the front-end extension). The math lives in ``gag_core`` (pure torch);
``nodes`` is the ComfyUI glue.
"""

WEB_DIRECTORY = "./web"


async def comfy_entrypoint():
    from .nodes import GAGExtension
    from .nodes.routes import register_routes
    register_routes()
    return GAGExtension()


__all__ = ["WEB_DIRECTORY", "comfy_entrypoint"]
