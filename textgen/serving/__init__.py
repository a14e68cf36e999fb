"""`python -m textgen.serve`: exported models behind HTTP, in TF Serving's REST format, with
batching, streams, metrics and a web page (docs/serving.md)."""
