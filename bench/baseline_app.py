"""The baseline: a bare hello-world JSON endpoint on the same HTTP stack as Squall.

Same stack as `squall.standalone.server_config`: uvicorn with http="httptools", the uvloop event
loop (started with `uvloop.run` exactly as Squall does, hence uvicorn's loop="none"), Starlette,
one worker, access log off. Run as its own process:
`python -m bench.baseline_app --host 127.0.0.1 --port PORT`.
"""

from __future__ import annotations

import argparse

import uvicorn
import uvloop
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route


async def hello(request: Request) -> JSONResponse:
    return JSONResponse({"hello": "world"})


app = Starlette(routes=[Route("/", hello), Route("/ping", hello)])


def server_config(host: str, port: int) -> uvicorn.Config:
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        loop="none",
        http="httptools",
        lifespan="off",
        access_log=False,
        log_level="warning",
        workers=1,
        timeout_keep_alive=65,
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    uvloop.run(uvicorn.Server(server_config(args.host, args.port)).serve())


if __name__ == "__main__":
    main()
