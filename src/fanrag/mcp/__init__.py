"""fanrag as an MCP server (``fanrag mcp``, extra ``mcp``): tools that agents call to search an index,
answer from it with citations, ingest files under a configured root and read its status.

    tools.py    what each tool does, over an opened ``Engine``: typed results, one-line refusals; no MCP
    models.py   the tools' typed results (pydantic): the SDK's structured output
    server.py   the official SDK's ``MCPServer`` over ``tools``: stdio, streamable HTTP, the read token

Importing this package imports nothing optional; ``server`` needs the extra.
"""
