import fanrag


def test_all_is_exactly_the_public_api() -> None:
    public = {name for name in dir(fanrag) if not name.startswith("_")}
    modules = {"errors", "settings", "types", "ids", "names", "engine", "ingest", "embed", "stores", "retrieve", "graph",
               "eval", "server", "cli", "limits", "jobs", "registry", "telemetry", "filters", "selection", "mcp", "testing", "annotations",
               "TYPE_CHECKING", "Any"}
    for name in fanrag.__all__:
        assert getattr(fanrag, name) is not None, name
    assert public - modules <= set(fanrag.__all__)
