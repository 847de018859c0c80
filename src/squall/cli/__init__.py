"""The `squall` command line, shaped like OpenWhisk's `wsk`.

- `client`: `WhiskClient`, a thin synchronous httpx wrapper over the REST API v1, and `WhiskError`.
- `properties`: the `~/.wskprops` file plus the environment and option overrides.
- `commands`: the click group `cli` with the client subcommands (`property`, `action`,
  `trigger`, `rule`, `activation`); `packages` adds `package`; server-side commands are added
  to the same group elsewhere.

Nothing here imports the server, so the client stays cheap to start.
"""
