"""Real servers for tests of the server backends (started from pytest fixtures, stopped at session end)."""
