"""python -m hybridml.cli: the same as the `hybridml` console script."""
from hybridml.cli.app import app

app()
