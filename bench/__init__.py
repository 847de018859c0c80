"""Squall's benchmark harness: `python -m bench` (full) or `python -m bench --smoke` (CI).

Every figure is measured beside a baseline in the same run: a bare hello-world endpoint on the
same HTTP stack Squall serves with (uvicorn + httptools + uvloop + Starlette, one worker).
"""
