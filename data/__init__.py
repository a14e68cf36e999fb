"""The files shipped with textgen and captioning, installed as the package `textgen.data`:
found through `textgen.resources`, never imported for code."""
