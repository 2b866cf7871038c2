"""lunad's Streamable HTTP front: every hosted server at http://HOST:PORT/<server>/mcp.

A front over the same pools as the unix sockets (DESIGN.md, "Fronts"): it authenticates a
request, turns a 2025-11-25 client into a daemon.session.Session bound to one worker, and
serves 2026-07-28 (stateless) requests from a few shared, already-running workers. It never
spawns a process itself. See docs/http.md.
"""
